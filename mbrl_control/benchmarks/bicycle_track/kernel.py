"""Fused Numba MPPI step for the ``bicycle-track`` benchmark problem (PROBLEM.md, canonical variant).

One call does everything of one control step: counter-based noise, clipping, Euler rollouts,
stage costs, the information-theoretic control cost, soft-min weights, the update of the
nominal sequence, and the warm-start shift. Rollouts run in parallel over blocks of samples;
inside a block one loop over the block's lanes per time step carries the whole step
(noise + model + cost), written branch-free so that LLVM vectorises it (float32, AVX-512).
No allocation happens per call: the workspace is allocated once by :class:`BicycleTrackKernel`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from mbrl_control.control import bicycle_track as bt
from mbrl_control.control.bicycle_track import BicycleTrackSettings
from mbrl_control.kernels.fastmath import CPU_KERNEL_OPTIONS, ONE, ZERO, clip32, sin_cos
from mbrl_control.kernels.mppi_common import (DEFAULT_BLOCK, padded, savgol_weights, shift_sequence, smooth_sequence,
                                              softmin_weights, weighted_update)
from mbrl_control.kernels.noise import normal_pair, stream_key

F32 = np.float32
_DT = F32(bt.DT_S)
_RATIO = F32(bt.LR_M / bt.WHEELBASE_M)
_INV_LR = F32(1.0 / bt.LR_M)
_R = F32(bt.RADIUS_M)
_VREF = F32(bt.V_REF_MPS)
_A_MAX = F32(bt.ACCEL_MAX_MPS2)
_D_MAX = F32(bt.STEER_MAX_RAD)
_W_DIST, _W_SPEED, _W_HEAD = F32(bt.W_DIST), F32(bt.W_SPEED), F32(bt.W_HEADING)
_W_ACC, _W_STEER = F32(bt.W_ACCEL), F32(bt.W_STEER)
_R_MIN = F32(1e-6)
_ZERO2 = np.zeros(2, dtype=np.float32)  # warm-start padding u = 0

# workspace rows per lane
_PX, _PY, _YAW, _V, _COS, _SIN, _COST, _EPS_A, _EPS_D, _N0, _N1 = range(11)
WS_ROWS = 11


@njit(parallel=True, cache=True, **CPU_KERNEL_OPTIONS)
def bicycle_rollouts(x0, U, sigma, lam, key, samples, ws, eps, costs, noise_alpha, null_samples):
    """Sample, roll out and cost all samples; fills ``eps`` (T, 2, K_pad) and ``costs`` (K_pad,).

    ``noise_alpha`` in [0, 1): AR(1) low-pass of the noise along the horizon (0: white, the
    canonical variant), unit variance kept; ``null_samples``: that many first samples get no noise.
    """
    blocks, _, block = ws.shape
    T = U.shape[0]
    sa, sd = sigma[0], sigma[1]
    ka = F32(lam) / (sa * sa)
    kd = F32(lam) / (sd * sd)
    s0, c0 = sin_cos(x0[2])
    for blk in prange(blocks):
        st = ws[blk]
        k0 = blk * block
        for b in range(block):
            st[_PX, b] = x0[0]
            st[_PY, b] = x0[1]
            st[_YAW, b] = x0[2]
            st[_V, b] = x0[3]
            st[_COS, b] = c0
            st[_SIN, b] = s0
            st[_COST, b] = ZERO
            st[_N0, b] = ZERO
            st[_N1, b] = ZERO
        alpha = F32(noise_alpha)
        beta = np.sqrt(ONE - alpha * alpha)
        for t in range(T):
            ua = U[t, 0]
            ud = U[t, 1]
            ca = ka * ua
            cd = kd * ud
            a_t = alpha if t > 0 else ZERO
            b_t = beta if t > 0 else ONE
            for b in range(block):
                w0, w1 = normal_pair(key, k0 + b, t)
                keep = ZERO if k0 + b < null_samples else ONE
                n0 = keep * (a_t * st[_N0, b] + b_t * w0)
                n1 = keep * (a_t * st[_N1, b] + b_t * w1)
                st[_N0, b] = n0
                st[_N1, b] = n1
                va = clip32(ua + sa * n0, -_A_MAX, _A_MAX)
                vd = clip32(ud + sd * n1, -_D_MAX, _D_MAX)
                ea = va - ua
                ed = vd - ud
                st[_EPS_A, b] = ea
                st[_EPS_D, b] = ed
                v = st[_V, b]
                cy = st[_COS, b]
                sy = st[_SIN, b]
                sdl, cdl = sin_cos(vd)
                tb = _RATIO * sdl / cdl  # tan(beta)
                cb = ONE / np.sqrt(ONE + tb * tb)
                sb = tb * cb
                dv = _DT * v
                px = st[_PX, b] + dv * (cy * cb - sy * sb)
                py = st[_PY, b] + dv * (sy * cb + cy * sb)
                yaw = st[_YAW, b] + dv * _INV_LR * sb
                v = v + _DT * va
                sy, cy = sin_cos(yaw)
                r = max(np.sqrt(px * px + py * py), _R_MIN)
                d = r - _R
                head = ONE - (sy * px - cy * py) / r
                dv_ref = v - _VREF
                stage = (_W_DIST * d * d + _W_SPEED * dv_ref * dv_ref + _W_HEAD * head
                         + _W_ACC * va * va + _W_STEER * vd * vd + ca * ea + cd * ed)
                st[_PX, b] = px
                st[_PY, b] = py
                st[_YAW, b] = yaw
                st[_V, b] = v
                st[_COS, b] = cy
                st[_SIN, b] = sy
                st[_COST, b] = st[_COST, b] + stage
            # separate copy loop: stores to a second array inside the loop above would need
            # runtime alias checks that make LLVM give up vectorising it
            e_a = eps[t, 0]
            e_d = eps[t, 1]
            for b in range(block):
                e_a[k0 + b] = st[_EPS_A, b]
                e_d[k0 + b] = st[_EPS_D, b]
        for b in range(block):
            c = st[_COST, b]
            costs[k0 + b] = c if (k0 + b < samples and c == c) else np.inf


@njit(cache=True, **CPU_KERNEL_OPTIONS)
def bicycle_mppi_step(x0, U, sigma, lam, key, samples, ws, eps, costs, weights, noise_alpha, null_samples,
                      smooth_coeffs, smooth_scratch, u_out):
    """One MPPI step: rollouts, weights, update, smoothing, ``u_out = U[0]``, shift. Returns min cost."""
    bicycle_rollouts(x0, U, sigma, lam, key, samples, ws, eps, costs, noise_alpha, null_samples)
    best, _ = softmin_weights(costs, samples, lam, weights)
    if best < np.inf:
        weighted_update(U, eps, weights)
    smooth_sequence(U, smooth_coeffs, smooth_scratch)
    u_out[0] = U[0, 0]
    u_out[1] = U[0, 1]
    shift_sequence(U, _ZERO2)
    return best


class BicycleTrackKernel:
    """The numba backend of MPPI on bicycle-track: a controller ``x -> (a, delta)``, deterministic for a seed."""

    def __init__(self, settings: BicycleTrackSettings, seed: int = 0, block: int = DEFAULT_BLOCK) -> None:
        if settings.samples < 1 or settings.horizon < 1:
            raise ValueError("samples and horizon must be positive")
        self.settings = settings
        self.seed = int(seed)
        blocks, k_pad = padded(settings.samples, block)
        self.sigma = np.array([settings.sigma_accel, settings.sigma_steer], dtype=np.float32)
        self.U = np.zeros((settings.horizon, 2), dtype=np.float32)
        self._coeffs = savgol_weights(settings.smoothing_window, settings.smoothing_order)
        self._smooth_scratch = np.zeros((settings.horizon + len(self._coeffs) - 1, 2), dtype=np.float32)
        self._ws = np.zeros((blocks, WS_ROWS, block), dtype=np.float32)
        self._eps = np.zeros((settings.horizon, 2, k_pad), dtype=np.float32)
        self._costs = np.zeros(k_pad, dtype=np.float64)
        self._weights = np.zeros(k_pad, dtype=np.float64)
        self._u = np.zeros(2, dtype=np.float32)
        self._x = np.zeros(4, dtype=np.float32)
        self.calls = 0

    def key(self) -> np.uint64:
        """Noise stream key of the next call."""
        return np.uint64(stream_key(self.seed, self.calls))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        s = self.settings
        self._x[:] = x
        bicycle_mppi_step(self._x, self.U, self.sigma, s.lam, self.key(), s.samples, self._ws, self._eps,
                          self._costs, self._weights, s.noise_alpha, s.null_samples, self._coeffs,
                          self._smooth_scratch, self._u)
        self.calls += 1
        return self._u.astype(np.float64)
