"""Pieces every fused MPPI kernel shares: workspace layout, soft-min weights, the weighted update.

Layout conventions (all float32 unless noted):

- samples are processed in blocks of ``block`` lanes (the vectorised inner loop); ``K`` samples
  are padded to ``blocks * block``; padded samples get cost +inf (weight 0);
- ``eps`` (T, 2, K_pad): the *applied* perturbation ``V - U`` of every sample (after clipping),
  time-major so that the update is a contiguous dot product per (t, channel);
- ``costs`` (K_pad,) float64: total cost S_k including the information-theoretic control cost;
- ``weights`` (K_pad,) float64: normalised importance weights.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from mbrl_control.kernels.fastmath import CPU_KERNEL_OPTIONS

REDUCE_FASTMATH = {"reassoc", "contract", "nsz"}  # vectorised reductions; NaN/inf semantics kept
KERNEL_FASTMATH = {"contract"}  # fused multiply-add only: results stay within float32 rounding of the models
DEFAULT_BLOCK = 32


def padded(samples: int, block: int) -> tuple[int, int]:
    """(blocks, padded sample count) for ``samples`` lanes in blocks of ``block``."""
    blocks = -(-samples // block)
    return blocks, blocks * block


@njit(cache=True, **CPU_KERNEL_OPTIONS)
def softmin_weights(costs, samples, lam, weights):
    """w_k = exp(-(S_k - min S) / lam) / sum; NaN costs count as +inf.

    Returns (min cost, effective sample size 1/sum w^2). When no sample has a finite cost all
    weights are 0 and the min is +inf: the caller keeps its nominal sequence.
    """
    n = costs.shape[0]
    best = np.inf
    for k in range(samples):
        c = costs[k]
        if c < best:  # False for NaN
            best = c
    if not best < np.inf:
        for k in range(n):
            weights[k] = 0.0
        return np.inf, 0.0
    total = 0.0
    for k in range(n):
        c = costs[k]
        w = math.exp(-(c - best) / lam) if (k < samples and c < np.inf) else 0.0
        weights[k] = w
        total += w
    sq = 0.0
    for k in range(n):
        w = weights[k] / total
        weights[k] = w
        sq += w * w
    return best, 1.0 / sq


@njit(parallel=True, cache=True, fastmath=REDUCE_FASTMATH, **CPU_KERNEL_OPTIONS)
def weighted_update(U, eps, weights):
    """U[t, c] += sum_k w_k eps[t, c, k] (in place)."""
    T, C, n = eps.shape
    for tc in prange(T * C):
        t = tc // C
        c = tc - t * C
        acc = 0.0
        for k in range(n):
            acc += weights[k] * eps[t, c, k]
        U[t, c] = np.float32(U[t, c] + acc)


@njit(cache=True, **CPU_KERNEL_OPTIONS)
def shift_sequence(U, fill):
    """Warm start: U[t] <- U[t+1], last row <- fill."""
    T, C = U.shape
    for t in range(T - 1):
        for c in range(C):
            U[t, c] = U[t + 1, c]
    for c in range(C):
        U[T - 1, c] = fill[c]


@njit(cache=True, **CPU_KERNEL_OPTIONS)
def smooth_sequence(U, coeffs, scratch):
    """FIR smoothing of U along time, in place: U[t] = sum_j coeffs[j] U[t + j - w//2], edges replicated.

    With Savitzky-Golay coefficients (``use="dot"``) this removes the sample-to-sample jitter
    the weighted noise average leaves in the nominal sequence. ``scratch``: (T + w - 1, C).
    """
    T, C = U.shape
    w = coeffs.shape[0]
    if w <= 1:
        return
    h = w // 2
    for t in range(T + w - 1):
        src = min(max(t - h, 0), T - 1)
        for c in range(C):
            scratch[t, c] = U[src, c]
    for t in range(T):
        for c in range(C):
            acc = 0.0
            for j in range(w):
                acc += coeffs[j] * scratch[t + j, c]
            U[t, c] = acc


def savgol_weights(window: int, order: int) -> np.ndarray:
    """Savitzky-Golay smoothing coefficients (dot form, centred); window 0 or 1 means no smoothing."""
    if window <= 1:
        return np.ones(1, dtype=np.float64)
    from scipy.signal import savgol_coeffs

    return np.asarray(savgol_coeffs(window, order, use="dot"), dtype=np.float64)


@intrinsic
def stack_buffer(typingctx, size, dtype):
    """A pointer to ``size`` (a literal) elements of ``dtype`` on the stack of the calling function.

    Why: LLVM can prove that a stack buffer does not alias any argument array, so loops that
    gather from read-only tables (track lookup, MLP weights) while storing lane state still
    vectorise. Wrap the pointer with ``numba.carray(ptr, shape)``.
    """
    if not isinstance(size, types.IntegerLiteral):
        return None
    count = size.literal_value

    def codegen(context, builder, sig, args):
        element = context.get_value_type(sig.return_type.dtype)
        return cgutils.alloca_once(builder, element, size=count)

    return types.CPointer(dtype.dtype)(size, dtype), codegen

