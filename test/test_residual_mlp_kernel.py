"""The CPU residual-MLP kernel's weight layout: row groups, padding, the per-thread reader."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from mbrl_control.kernels.fastmath import CPU_KERNEL_OPTIONS
from mbrl_control.kernels.residual_mlp import (GROUP, LANES, MAX_HIDDEN, OUTPUTS, ROW_PAD, group_rows, mlp_lanes,
                                               mlp_thread, pack_residual, weight_index)
from mbrl_control.models.residual import ResidualEnsemble


@njit(**CPU_KERNEL_OPTIONS)
def _thread_outputs(feat, params, layout, member, out):
    h_a = np.zeros(MAX_HIDDEN, dtype=np.float32)
    h_b = np.zeros(MAX_HIDDEN, dtype=np.float32)
    for k in range(feat.shape[0]):
        r = mlp_thread(feat[k], h_a, h_b, params, layout, member)
        for j in range(OUTPUTS):
            out[k, j] = r[j]


@pytest.mark.parametrize("n_out,n_in", [(32, 6), (12, 32), (3, 32), (20, 7), (4, 5)])
def test_weight_index_reads_the_row_grouped_block(n_out, n_in):
    from mbrl_control.kernels.residual_mlp import _grouped

    w = np.arange(2 * n_out * n_in, dtype=np.float64).reshape(2, n_out, n_in)
    flat = _grouped(w)
    for e in range(2):
        for j in range(n_out):
            assert group_rows(j, n_out) == min(GROUP, n_out - j + j % GROUP)
            for i in range(n_in):
                assert flat[e, weight_index(j, i, n_in, n_out)] == w[e, j, i]


@pytest.mark.parametrize("hidden", [(5,), (12, 20), (32, 32), (8, 12, 5)])
def test_padded_layers_give_the_lanes_and_threads_the_same_outputs(hidden):
    ens = ResidualEnsemble(3, hidden, seed=1)
    pack = pack_residual(ens.export())
    padded = [int(pack.layout[3 + 3 * layer]) for layer in range(len(hidden) + 1)]
    assert padded == [-(-h // ROW_PAD) * ROW_PAD for h in hidden] + [OUTPUTS]
    rng = np.random.default_rng(4)
    feat = rng.normal(0, 2, (LANES, 6)).astype(np.float32)
    for member in range(ens.members):
        lanes = np.zeros(OUTPUTS * LANES, dtype=np.float32)
        mlp_lanes(np.ascontiguousarray(feat.T).reshape(-1), lanes, pack.params, pack.layout, member)
        threads = np.zeros((LANES, OUTPUTS), dtype=np.float32)
        _thread_outputs(feat, pack.params, pack.layout, member, threads)
        # same products in the same order; only FMA contraction (lanes) differs from the thread version
        assert np.max(np.abs(lanes.reshape(OUTPUTS, LANES).T - threads)) < 1e-5
