"""The learned residual (tanh MLP ensemble) packed for the kernels, and its evaluation in them.

:func:`pack_residual` turns :class:`~mbrl_control.models.residual.ResidualWeights` into one flat
float32 array plus an int64 layout, folding the input normalisation into the first layer and
the output de-normalisation (rows 0..2, the mean) into the last one. Swapping in a model of the
same or of another shape is a new pair of arrays, never a recompilation.

Layout: ``[E, L, n_in, (n_out_l, w_off_l, b_off_l) for each layer l]``; member ``e``'s weights
of layer ``l`` are the row-major (n_out_l, n_in_l) block at ``w_off_l + e * n_out_l * n_in_l``,
its biases at ``b_off_l + e * n_out_l``. The last layer keeps the 3 mean rows (and a zero 4th row).

Each sample follows one ensemble member for its whole horizon (trajectory sampling, PETS):
sample ``k`` uses member ``(k // MEMBER_BLOCK) % E``, so that a block of vectorised lanes shares
its weights. The torch backend uses the same assignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import carray, njit

from mbrl_control.kernels.fastmath import CPU_KERNEL_OPTIONS, device_function, tanh32
from mbrl_control.kernels.mppi_common import KERNEL_FASTMATH, stack_buffer

MEMBER_BLOCK = 32
MAX_HIDDEN = 64  # widest hidden layer the kernels' scratch rows hold
FEATURES = 6
OUTPUTS = 3
_LANE_BUF = MAX_HIDDEN * MEMBER_BLOCK  # literal sizes of the stack buffers of mlp_lanes
_ACC_BUF = 4 * MEMBER_BLOCK


@dataclass(frozen=True)
class ResidualPack:
    params: np.ndarray  # float32 flat weights and biases
    layout: np.ndarray  # int64, see module docstring
    members: int
    hidden: tuple[int, ...]


def member_of_sample(samples: int, members: int) -> np.ndarray:
    """Ensemble member of every sample (the assignment all backends share)."""
    return (np.arange(samples) // MEMBER_BLOCK) % members


def pack_residual(weights) -> ResidualPack:
    """Fold normalisation into the layers and flatten (validated: shapes, finiteness, width limit)."""
    ws = [np.asarray(w, dtype=np.float64) for w in weights.weights]
    bs = [np.asarray(b, dtype=np.float64) for b in weights.biases]
    if getattr(weights, "activation", "tanh") != "tanh":
        raise ValueError(f"residual activation {weights.activation!r} is not supported by the kernels (tanh only)")
    if not ws or ws[0].ndim != 3 or ws[0].shape[2] != FEATURES or ws[-1].shape[1] < OUTPUTS:
        raise ValueError("residual weights do not have the (E, out, in) shapes of 6 features -> 3+ outputs")
    members = ws[0].shape[0]
    hidden = tuple(int(w.shape[1]) for w in ws[:-1])
    if any(h > MAX_HIDDEN for h in hidden):
        raise ValueError(f"residual hidden layers wider than {MAX_HIDDEN} units are not supported by the kernels")
    in_mean = np.asarray(weights.in_mean, dtype=np.float64)
    in_std = np.asarray(weights.in_std, dtype=np.float64)
    out_mean = np.asarray(weights.out_mean, dtype=np.float64)[:OUTPUTS]
    out_std = np.asarray(weights.out_std, dtype=np.float64)[:OUTPUTS]
    ws[0] = ws[0] / in_std
    bs[0] = bs[0] - np.einsum("eoi,i->eo", ws[0], in_mean)
    # the 3 mean rows, de-normalised, plus a zero row: 4 rows run the CPU kernel's 4-row fast path
    last_w = np.zeros((members, OUTPUTS + 1, ws[-1].shape[2]))
    last_b = np.zeros((members, OUTPUTS + 1))
    last_w[:, :OUTPUTS] = ws[-1][:, :OUTPUTS, :] * out_std[None, :, None]
    last_b[:, :OUTPUTS] = bs[-1][:, :OUTPUTS] * out_std + out_mean
    ws[-1], bs[-1] = last_w, last_b
    layout = [members, len(ws), FEATURES]
    chunks, offset = [], 0
    for w, b in zip(ws, bs):
        if w.shape[0] != members or b.shape != w.shape[:2]:
            raise ValueError("residual layers disagree on the ensemble size or bias shapes")
        layout += [w.shape[1], offset, offset + w.size]
        chunks += [w.reshape(-1), b.reshape(-1)]
        offset += w.size + b.size
    flat = np.concatenate(chunks).astype(np.float32)
    if not np.all(np.isfinite(flat)):
        raise ValueError("residual weights are not finite")
    return ResidualPack(flat, np.asarray(layout, dtype=np.int64), members, hidden)


EMPTY_PACK = ResidualPack(np.zeros(1, dtype=np.float32), np.zeros(3, dtype=np.int64), 0, ())


LANES = MEMBER_BLOCK  # the CPU MLP evaluates one block of samples at a time
_ROWS4 = 4 * LANES


@njit(fastmath=KERNEL_FASTMATH, **CPU_KERNEL_OPTIONS)
def dense_block(src, n_in, dst, n_out, params, w_off, b_off, activate):
    """One layer for a block of LANES samples: dst[j*LANES + b] = act(b_j + sum_i W_ji src[i*LANES + b]).

    Four output rows are accumulated together (independent FMA chains, one load of an input row
    for four FMAs) in a stack accumulator that LLVM keeps in vector registers; the lane loops have
    the constant length LANES and are vectorised by LLVM's SLP vectoriser, which this function is
    compiled with (see :func:`_compile_dense_block`). A remainder of n_out % 4 rows goes one by one.
    """
    acc = carray(stack_buffer(_ROWS4, np.float32), (_ROWS4,))
    j = 0
    while j < n_out:
        rows = min(4, n_out - j)
        for r in range(4):
            bias = params[b_off + j + r] if r < rows else np.float32(0.0)
            for b in range(LANES):
                acc[r * LANES + b] = bias
        r0 = w_off + j * n_in
        # slices: indices from range() are known non-negative, so no wrap-around code per access
        if rows == 4:
            w0 = params[r0:r0 + n_in]
            w1 = params[r0 + n_in:r0 + 2 * n_in]
            w2 = params[r0 + 2 * n_in:r0 + 3 * n_in]
            w3 = params[r0 + 3 * n_in:r0 + 4 * n_in]
            for i in range(n_in):
                x_row = src[i * LANES:(i + 1) * LANES]
                a0, a1, a2, a3 = w0[i], w1[i], w2[i], w3[i]
                for b in range(LANES):
                    x = x_row[b]
                    acc[b] += a0 * x
                    acc[LANES + b] += a1 * x
                    acc[2 * LANES + b] += a2 * x
                    acc[3 * LANES + b] += a3 * x
        else:
            for r in range(rows):
                w_row = params[r0 + r * n_in:r0 + (r + 1) * n_in]
                for i in range(n_in):
                    x_row = src[i * LANES:(i + 1) * LANES]
                    a = w_row[i]
                    for b in range(LANES):
                        acc[r * LANES + b] += a * x_row[b]
        for r in range(rows):
            d_row = dst[(j + r) * LANES:(j + r + 1) * LANES]
            a_row = acc[r * LANES:(r + 1) * LANES]
            if activate:
                for b in range(LANES):
                    d_row[b] = tanh32(a_row[b])
            else:
                for b in range(LANES):
                    d_row[b] = a_row[b]
        j += rows


def _compile_dense_block() -> None:
    """Compile :func:`dense_block` once, eagerly, with LLVM's SLP vectoriser switched on.

    Numba leaves SLP off by default; the constant-length lane loops above are unrolled completely
    before the loop vectoriser runs, and only SLP turns them back into vector code (3x faster
    here). The switch is read at compile time, so it is set only around this one compilation.
    """
    import numba

    from numba import types

    arr = types.Array(types.float32, 1, "C")
    old = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        dense_block.compile((arr, types.int64, arr, types.int64, arr, types.int64, types.int64, types.boolean))
    finally:
        numba.config.SLP_VECTORIZE = old
    dense_block.disable_compile()


_compile_dense_block()
_LANE_BUF = MAX_HIDDEN * LANES  # literal sizes of the stack buffers of mlp_lanes


@njit(cache=True, **CPU_KERNEL_OPTIONS)
def mlp_lanes(feat, out, params, layout, member):
    """The residual of one block of LANES samples: ``feat`` flat (6, LANES) rows in, ``out`` flat
    (3, LANES) rows out, ensemble member ``member``.

    A separate compiled function (inlining the layers into the rollout kernel multiplied its
    compile time); the layers alternate between two stack buffers.
    """
    buf_a = carray(stack_buffer(_LANE_BUF, np.float32), (_LANE_BUF,))
    buf_b = carray(stack_buffer(_LANE_BUF, np.float32), (_LANE_BUF,))
    for i in range(FEATURES * LANES):
        buf_b[i] = feat[i]
    layers = layout[1]
    n_in = layout[2]
    for layer in range(layers):
        n_out = layout[3 + 3 * layer]
        w_off = layout[4 + 3 * layer] + member * n_out * n_in
        b_off = layout[5 + 3 * layer] + member * n_out
        activate = layer < layers - 1
        if layer % 2 == 0:
            dense_block(buf_b, n_in, buf_a, n_out, params, w_off, b_off, activate)
        else:
            dense_block(buf_a, n_in, buf_b, n_out, params, w_off, b_off, activate)
        n_in = n_out
    last = buf_a if layers % 2 == 1 else buf_b
    for i in range(OUTPUTS * LANES):
        out[i] = last[i]


@device_function
def mlp_thread(feat, h_a, h_b, params, layout, member):
    """Per-thread version (CUDA): ``feat`` (6,) local, ``h_a``/``h_b`` (MAX_HIDDEN,) local; returns the (3,) output array."""
    layers = layout[1]
    n_in = layout[2]
    src = feat
    for layer in range(layers):
        n_out = layout[3 + 3 * layer]
        w_off = layout[4 + 3 * layer] + member * n_out * n_in
        b_off = layout[5 + 3 * layer] + member * n_out
        dst = h_a if layer % 2 == 0 else h_b
        for j in range(n_out):
            acc = params[b_off + j]
            row = w_off + j * n_in
            for i in range(n_in):
                acc += params[row + i] * src[i]
            dst[j] = tanh32(acc) if layer < layers - 1 else acc
        src = dst
        n_in = n_out
    return src

