"""Counter-based Gaussian noise: the same numbers from the Numba, CUDA and torch backends.

Why counter-based: the fused kernels draw the MPPI exploration noise inside the rollout
loop (no K x T x 2 array to fill beforehand), in parallel and vectorised, and the torch
backend must be able to produce bit-identical uniforms so that backends can be compared
sample by sample. Each (sample k, time step t) gets one 64-bit hash of
``key + k * 2**20 + t`` (SplitMix64 finaliser, a bijection with good avalanche); its top 24
bits and next 24 bits are two uniforms, turned into the pair of standard normals of the two
control channels by the Box-Muller transform. ``key`` is derived from the controller seed
and the call counter, so a run is deterministic for a seed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mbrl_control.kernels.fastmath import HALF, device_function, log_unit, sin_cos

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
TIME_BITS = 20  # t < 2**20 steps, k < 2**40 samples
MAX_HORIZON = 1 << TIME_BITS

_U_GOLDEN = np.uint64(GOLDEN)
_U_MIX1 = np.uint64(MIX1)
_U_MIX2 = np.uint64(MIX2)
_U_30, _U_27, _U_31 = np.uint64(30), np.uint64(27), np.uint64(31)
_U_40, _U_16, _U_24MASK = np.uint64(40), np.uint64(16), np.uint64(0xFFFFFF)
_U_TIME_BITS = np.uint64(TIME_BITS)
_INV_2_24 = np.float32(2.0**-24)
_MINUS_TWO = np.float32(-2.0)
_TWO_PI = np.float32(2.0 * math.pi)


def mix64_int(x: int) -> int:
    """SplitMix64 finaliser on Python ints (host side: keys)."""
    z = (x + GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, call_index: int) -> int:
    """64-bit key of one controller call (one set of K x T noise pairs)."""
    return mix64_int((mix64_int(seed & MASK64) + (call_index & MASK64)) & MASK64)


@device_function
def mix64(x):
    """SplitMix64 finaliser on a uint64 (kernel side)."""
    z = x + _U_GOLDEN
    z = (z ^ (z >> _U_30)) * _U_MIX1
    z = (z ^ (z >> _U_27)) * _U_MIX2
    return z ^ (z >> _U_31)


@device_function(inline="always")
def normal_pair(key, k, t):
    """Two standard normals (float32) for sample ``k`` and step ``t`` of the stream ``key`` (uint64)."""
    h = mix64(key + ((np.uint64(k) << _U_TIME_BITS) + np.uint64(t)))
    u1 = (np.float32(h >> _U_40) + HALF) * _INV_2_24  # (0, 1)
    u2 = np.float32((h >> _U_16) & _U_24MASK) * _INV_2_24  # [0, 1)
    radius = np.sqrt(_MINUS_TWO * log_unit(u1))
    s, c = sin_cos(_TWO_PI * u2)
    return radius * c, radius * s


# ---------------------------------------------------------------- references (NumPy, torch)

def _uniforms_numpy(key: int, k: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(over="ignore"):
        x = np.uint64(key) + ((k.astype(np.uint64) << np.uint64(TIME_BITS)) + t.astype(np.uint64))
        z = x + _U_GOLDEN
        z = (z ^ (z >> _U_30)) * _U_MIX1
        z = (z ^ (z >> _U_27)) * _U_MIX2
        h = z ^ (z >> _U_31)
    u1 = ((h >> _U_40).astype(np.float64) + 0.5) * 2.0**-24
    u2 = ((h >> _U_16) & _U_24MASK).astype(np.float64) * 2.0**-24
    return u1, u2


def normal_pairs_numpy(key: int, samples: int, horizon: int) -> np.ndarray:
    """(samples, horizon, 2) standard normals in float64, the exact-math reference of the kernels."""
    k, t = np.meshgrid(np.arange(samples), np.arange(horizon), indexing="ij")
    u1, u2 = _uniforms_numpy(key, k, t)
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2.astype(np.float32).astype(np.float64)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 tensors holding uint64 bit patterns."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def normal_pairs_torch(key: int, samples: int, horizon: int, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(samples, horizon, 2) standard normals from the same counters as the kernels (int64 wrap-around)."""
    k = torch.arange(samples, device=device, dtype=torch.int64)[:, None]
    t = torch.arange(horizon, device=device, dtype=torch.int64)[None, :]
    z = (k << TIME_BITS) + t + _signed(key) + _signed(GOLDEN)
    z = (z ^ _shr(z, 30)) * _signed(MIX1)
    z = (z ^ _shr(z, 27)) * _signed(MIX2)
    h = z ^ _shr(z, 31)
    u1 = (_shr(h, 40).to(torch.float32) + 0.5) * 2.0**-24
    u2 = (_shr(h, 16) & 0xFFFFFF).to(torch.float32) * 2.0**-24
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = (2.0 * math.pi) * u2
    out = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    return out.to(dtype)
