"""The learned residual (tanh MLP ensemble) packed for the kernels, and its evaluation in them.

A hand-specialised executor of the residual's one definition
(:mod:`mbrl_control.models.residual_definition`): register-blocked, vectorised lanes for the CPU
(:func:`mlp_lanes`) and a per-thread loop for CUDA (:func:`mlp_thread`) over a packed layout;
``test/test_residual_definition.py`` checks both against the definition.

:func:`pack_residual` turns :class:`~mbrl_control.models.residual.ResidualWeights` into one flat
float32 array plus an int64 layout, folding the input normalisation into the first layer and
the output de-normalisation (rows 0..2, the mean) into the last one. Swapping in a model of the
same or of another shape is a new pair of arrays, never a recompilation.

Layout: ``[E, L, n_in, (n_out_l, w_off_l, b_off_l) for each layer l]``; member ``e``'s weights
of layer ``l`` are the (n_out_l, n_in_l) block at ``w_off_l + e * n_out_l * n_in_l``, its biases
at ``b_off_l + e * n_out_l``. The block is stored in row groups of :data:`GROUP` rows (the last
group of a layer may be smaller), each group input-major: row ``j`` of group ``j0 = j - j % GROUP``
with ``rows = min(GROUP, n_out_l - j0)`` has its weight ``i`` at ``j0 * n_in_l + i * rows + j - j0``
(:func:`weight_index`), so that the CPU kernel reads the weights of one input for all rows of its
register block at once. Hidden layers are padded with zero rows to a multiple of :data:`ROW_PAD`
units (exact: tanh(0) = 0 and the next layer's weights on them are zero). The last layer keeps the
3 mean rows.

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
GROUP = 8  # output rows of one register block of the CPU kernel (16 AVX-512 accumulators)
ROW_PAD = 4  # hidden layers are padded to a multiple of this many units (8- and 4-row blocks only)
FEATURES = 6
OUTPUTS = 3


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
    ws[-1] = ws[-1][:, :OUTPUTS, :] * out_std[None, :, None]  # the 3 mean rows, de-normalised
    bs[-1] = bs[-1][:, :OUTPUTS] * out_std + out_mean
    for w, b in zip(ws, bs):
        if w.shape[0] != members or b.shape != w.shape[:2]:
            raise ValueError("residual layers disagree on the ensemble size or bias shapes")
    ws, bs = _pad_hidden(ws, bs)
    layout = [members, len(ws), FEATURES]
    chunks, offset = [], 0
    for w, b in zip(ws, bs):
        layout += [w.shape[1], offset, offset + w.size]
        chunks += [_grouped(w).reshape(-1), b.reshape(-1)]
        offset += w.size + b.size
    flat = np.concatenate(chunks).astype(np.float32)
    if not np.all(np.isfinite(flat)):
        raise ValueError("residual weights are not finite")
    return ResidualPack(flat, np.asarray(layout, dtype=np.int64), members, hidden)


def _pad_hidden(ws: list[np.ndarray], bs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hidden layers padded with zero rows to a multiple of ROW_PAD, the next layer with zero columns."""
    ws, bs = list(ws), list(bs)
    for layer in range(len(ws) - 1):
        members, n_out, n_in = ws[layer].shape
        pad = -n_out % ROW_PAD
        if pad:
            ws[layer] = np.concatenate([ws[layer], np.zeros((members, pad, n_in))], axis=1)
            bs[layer] = np.concatenate([bs[layer], np.zeros((members, pad))], axis=1)
            nxt = ws[layer + 1]
            ws[layer + 1] = np.concatenate([nxt, np.zeros((members, nxt.shape[1], pad))], axis=2)
    return ws, bs


def _grouped(w: np.ndarray) -> np.ndarray:
    """(E, n_out, n_in) weights -> (E, n_out * n_in) in row groups of GROUP, each input-major."""
    members, n_out, n_in = w.shape
    out = np.empty((members, n_out * n_in))
    for j0 in range(0, n_out, GROUP):
        rows = min(GROUP, n_out - j0)
        out[:, j0 * n_in:(j0 + rows) * n_in] = w[:, j0:j0 + rows, :].transpose(0, 2, 1).reshape(members, -1)
    return out


EMPTY_PACK = ResidualPack(np.zeros(1, dtype=np.float32), np.zeros(3, dtype=np.int64), 0, ())


LANES = MEMBER_BLOCK  # the CPU MLP evaluates one block of samples at a time
_GROUP_BUF = GROUP * LANES
_HALF_BUF = 4 * LANES
_OUT_BUF = OUTPUTS * LANES


@njit(fastmath=KERNEL_FASTMATH, **CPU_KERNEL_OPTIONS)
def dense_block(src, n_in, dst, n_out, params, w_off, b_off):
    """One hidden layer for a block of LANES samples: dst[j*LANES + b] = tanh(b_j + sum_i W_ji src[i*LANES + b]).

    Eight output rows at a time (then one group of four: n_out is a multiple of ROW_PAD): sixteen
    independent AVX-512 FMA chains in registers, one broadcast weight for two FMAs, one load of
    an input row for sixteen. The tanh runs afterwards in one pass over the whole layer (7 %
    faster than per group: the groups' FMAs run back to back, the tanh is one long vector loop).
    The lane loops have the constant length LANES and are vectorised by LLVM's SLP vectoriser,
    which this function is compiled with (see :func:`_compile_blocks`). All indices are range()
    values times constants inside slices taken once per layer or group: no wrap-around code.
    """
    acc = carray(stack_buffer(_GROUP_BUF, np.float32), (_GROUP_BUF,))
    w = params[w_off:w_off + n_out * n_in]
    bias = params[b_off:b_off + n_out]
    groups = n_out // GROUP
    for g in range(groups):
        wg = w[g * GROUP * n_in:(g + 1) * GROUP * n_in]
        bg = bias[g * GROUP:(g + 1) * GROUP]
        for r in range(GROUP):
            for b in range(LANES):
                acc[r * LANES + b] = bg[r]
        for i in range(n_in):
            a0, a1, a2, a3 = wg[i * GROUP], wg[i * GROUP + 1], wg[i * GROUP + 2], wg[i * GROUP + 3]
            a4, a5, a6, a7 = wg[i * GROUP + 4], wg[i * GROUP + 5], wg[i * GROUP + 6], wg[i * GROUP + 7]
            for b in range(LANES):
                x = src[i * LANES + b]
                acc[b] += a0 * x
                acc[LANES + b] += a1 * x
                acc[2 * LANES + b] += a2 * x
                acc[3 * LANES + b] += a3 * x
                acc[4 * LANES + b] += a4 * x
                acc[5 * LANES + b] += a5 * x
                acc[6 * LANES + b] += a6 * x
                acc[7 * LANES + b] += a7 * x
        d = dst[g * _GROUP_BUF:(g + 1) * _GROUP_BUF]
        for q in range(_GROUP_BUF):
            d[q] = acc[q]
    if n_out > groups * GROUP:  # four rows left
        j = groups * GROUP
        wg = w[j * n_in:(j + 4) * n_in]
        bg = bias[j:j + 4]
        for r in range(4):
            for b in range(LANES):
                acc[r * LANES + b] = bg[r]
        for i in range(n_in):
            a0, a1, a2, a3 = wg[i * 4], wg[i * 4 + 1], wg[i * 4 + 2], wg[i * 4 + 3]
            for b in range(LANES):
                x = src[i * LANES + b]
                acc[b] += a0 * x
                acc[LANES + b] += a1 * x
                acc[2 * LANES + b] += a2 * x
                acc[3 * LANES + b] += a3 * x
        d = dst[j * LANES:(j + 4) * LANES]
        for q in range(_HALF_BUF):
            d[q] = acc[q]
    h = dst[:n_out * LANES]
    for q in range(n_out * LANES):
        h[q] = tanh32(h[q])


@njit(fastmath=KERNEL_FASTMATH, **CPU_KERNEL_OPTIONS)
def output_block(src, n_in, out, params, w_off, b_off):
    """The linear output layer (OUTPUTS rows) for a block of LANES samples, written to ``out``.

    Three rows (no zero padding row): six FMA chains, accumulated in a stack buffer (which LLVM
    keeps in registers: it aliases none of the arguments) and copied to ``out`` at the end.
    """
    acc = carray(stack_buffer(_OUT_BUF, np.float32), (_OUT_BUF,))
    w = params[w_off:w_off + OUTPUTS * n_in]
    bias = params[b_off:b_off + OUTPUTS]
    for r in range(OUTPUTS):
        for b in range(LANES):
            acc[r * LANES + b] = bias[r]
    for i in range(n_in):
        a0, a1, a2 = w[i * OUTPUTS], w[i * OUTPUTS + 1], w[i * OUTPUTS + 2]
        for b in range(LANES):
            x = src[i * LANES + b]
            acc[b] += a0 * x
            acc[LANES + b] += a1 * x
            acc[2 * LANES + b] += a2 * x
    o = out[:_OUT_BUF]
    for q in range(_OUT_BUF):
        o[q] = acc[q]


def _compile_blocks() -> None:
    """Compile :func:`dense_block` and :func:`output_block` once, eagerly, with LLVM's SLP vectoriser on.

    Numba leaves SLP off by default; the constant-length lane loops above are unrolled completely
    before the loop vectoriser runs, and only SLP turns them back into vector code (3x faster
    here). The switch is read at compile time, so it is set only around these compilations.
    """
    import numba

    from numba import types

    arr = types.Array(types.float32, 1, "C")
    i64 = types.int64
    old = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        dense_block.compile((arr, i64, arr, i64, arr, i64, i64))
        output_block.compile((arr, i64, arr, arr, i64, i64))
    finally:
        numba.config.SLP_VECTORIZE = old
    dense_block.disable_compile()
    output_block.disable_compile()


_compile_blocks()
_LANE_BUF = MAX_HIDDEN * LANES  # literal sizes of the stack buffers of mlp_lanes


@njit(cache=True, **CPU_KERNEL_OPTIONS)
def mlp_lanes(feat, out, params, layout, member):
    """The residual of one block of LANES samples: ``feat`` flat (6, LANES) rows in, ``out`` flat
    (3, LANES) rows out, ensemble member ``member``.

    A separate compiled function (inlining the layers into the rollout kernel multiplied its
    compile time); the first layer reads ``feat``, the hidden layers alternate between two stack
    buffers, the output layer writes ``out``.
    """
    buf_a = carray(stack_buffer(_LANE_BUF, np.float32), (_LANE_BUF,))
    buf_b = carray(stack_buffer(_LANE_BUF, np.float32), (_LANE_BUF,))
    layers = layout[1]
    n_in = layout[2]
    src = feat
    for layer in range(layers):
        n_out, w_off, b_off = layer_geometry(layout, layer, n_in, member)
        if layer == layers - 1:
            output_block(src, n_in, out, params, w_off, b_off)
        else:
            dst = buf_a if layer % 2 == 0 else buf_b
            dense_block(src, n_in, dst, n_out, params, w_off, b_off)
            src = dst
        n_in = n_out


@device_function
def layer_geometry(layout, layer, n_in, member):
    """(outputs, weight offset, bias offset) of layer ``layer`` of ensemble member ``member``."""
    n_out = layout[3 + 3 * layer]
    return n_out, layout[4 + 3 * layer] + member * n_out * n_in, layout[5 + 3 * layer] + member * n_out


@device_function
def weight_index(j, i, n_in, n_out):
    """Offset of W[j, i] in a layer's (row-grouped) weight block; see the module docstring."""
    j0 = j - j % GROUP
    return j0 * n_in + i * group_rows(j, n_out) + (j - j0)


@device_function
def group_rows(j, n_out):
    """Rows of the weight group that row ``j`` belongs to: the stride of its weights."""
    return min(GROUP, n_out - (j - j % GROUP))


@device_function
def mlp_thread(feat, h_a, h_b, params, layout, member):
    """Per-thread version (CUDA): ``feat`` (6,) local, ``h_a``/``h_b`` (MAX_HIDDEN,) local; returns the (3,) output array."""
    layers = layout[1]
    n_in = layout[2]
    src = feat
    for layer in range(layers):
        n_out, w_off, b_off = layer_geometry(layout, layer, n_in, member)
        dst = h_a if layer % 2 == 0 else h_b
        for j in range(n_out):
            acc = params[b_off + j]
            row = w_off + weight_index(j, 0, n_in, n_out)
            stride = group_rows(j, n_out)
            for i in range(n_in):
                acc += params[row + i * stride] * src[i]
            dst[j] = tanh32(acc) if layer < layers - 1 else acc
        src = dst
        n_in = n_out
    return src

