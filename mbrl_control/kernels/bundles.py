"""Typed bundles: the arguments of the generated MPPI kernels, grouped by what they describe.

Each bundle is a ``NamedTuple`` of arrays and integers; Numba types it field by field, so a kernel
reads ``model.params`` or ``sampling.options`` as it would a plain argument, and a new bundle of the
same field types (new parameters, weights, track) never recompiles. The classes live in this
package module (not in a generated one) so that Numba's on-disk cache can pickle the signatures
of the kernels compiled for them and a second process loads those kernels instead of compiling.

Array layouts the kernels read: :func:`options_vector` (``Sampling.options``),
:func:`integrator_tableau` (``ModelData.tableau``), :func:`~.residual_mlp.pack_residual`
(``ModelData.mlp_params`` / ``mlp_layout``), :class:`~mbrl_control.problem.track_context.TrackTable`
(``TrackData``).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from mbrl_control.kernels.residual_mlp import EMPTY_PACK, ResidualPack

O_LAMBDA, O_GAMMA, O_ALPHA = 0, 1, 2
"""Scalars at the head of the options vector: temperature, control-cost weight, noise AR coefficient."""
O_SIGMA = 3
"""Offset of the per-control noise scales; then the ``m`` lower and the ``m`` upper control bounds."""
MAX_STAGES = 4


class Sampling(NamedTuple):
    """How samples are drawn and charged: the options vector (float32), sample counts, lane width."""

    options: np.ndarray  # float32 (3 + 3 m,), see options_vector
    samples: int  # K (the kernels pad to whole blocks)
    null_samples: int  # that many first samples keep the nominal sequence
    lanes: int  # samples per vectorised block: a run-time value so that LLVM vectorises, not unrolls


class ModelData(NamedTuple):
    """A motion model's run-time data: parameters, integrator, learned residual."""

    params: np.ndarray  # float32, the definition's param_names order
    tableau: np.ndarray  # float32, integrator_tableau
    substeps: int
    mlp_params: np.ndarray  # float32, residual_mlp.pack_residual (EMPTY_PACK: none)
    mlp_layout: np.ndarray  # int64


class TrackData(NamedTuple):
    """A race track's lookup tables (TrackTable.cells / segments / scalars)."""

    cells: np.ndarray  # int32 (ny, nx)
    segments: np.ndarray  # float32 (segments + 2, SEG_FIELDS)
    scalars: np.ndarray  # float32 (6,)


class NoContextData(NamedTuple):
    """The context of a problem without one (the kernels read nothing from it)."""

    unused: np.ndarray  # float32 (1,)


class CostData(NamedTuple):
    """The cost terms' weights, concatenated in the problem's order (float32)."""

    weights: np.ndarray


class Workspace(NamedTuple):
    """Per-iteration outputs of the CPU kernel: applied perturbations, costs, soft-min weights."""

    eps: np.ndarray  # float32 (T, m, K_pad)
    costs: np.ndarray  # float64 (K_pad,)
    weights: np.ndarray  # float64 (K_pad,)


def options_vector(sigma: Sequence[float], u_min: Sequence[float], u_max: Sequence[float], temperature: float,
                   control_cost_weight: float, noise_alpha: float) -> np.ndarray:
    """The float32 options vector ``[lambda, gamma, alpha, sigma (m), u_min (m), u_max (m)]``."""
    head = [temperature, control_cost_weight, noise_alpha]
    return np.array([*head, *sigma, *u_min, *u_max], dtype=np.float32)


def integrator_tableau(integrator: str, dt_s: float, substeps: int) -> np.ndarray:
    """float32 [n_stages, stage input offsets (4), stage weights (4), final factor] of one sub-step.

    Stage s evaluates f(state + offset_s * k_{s-1}); the sub-step is state + final * sum_s w_s k_s,
    the exact arithmetic of ``models.base.integrate_step`` (offsets 0.5 h, 0.5 h, h; weights
    1, 2, 2, 1; final h / 6 for RK4; one stage, final h for Euler).
    """
    h = dt_s / substeps
    tab = np.zeros(2 + 2 * MAX_STAGES, dtype=np.float32)
    if integrator == "rk4":
        tab[0] = 4
        tab[1:5] = [0.0, 0.5 * h, 0.5 * h, h]
        tab[5:9] = [1.0, 2.0, 2.0, 1.0]
        tab[9] = h / 6.0
    elif integrator == "euler":
        tab[0] = 1
        tab[5] = 1.0
        tab[9] = h
    else:
        raise ValueError(f"unknown integrator {integrator!r}")
    return tab


def model_data(params: np.ndarray, integrator: str, dt_s: float, substeps: int,
               residual: ResidualPack = EMPTY_PACK) -> ModelData:
    """The model bundle of a parameter vector, a discretisation and a packed residual."""
    return ModelData(np.ascontiguousarray(params, dtype=np.float32), integrator_tableau(integrator, dt_s, substeps),
                     int(substeps), residual.params, residual.layout)


def no_context_data() -> NoContextData:
    return NoContextData(np.zeros(1, dtype=np.float32))


class CudaPartials(NamedTuple):
    """Per-block partial sums of the CUDA kernel's soft-min reduction (see :mod:`.mppi_cuda`)."""

    part_min: np.ndarray  # float64 (blocks,): each block's minimum cost
    part_z: np.ndarray  # float64 (blocks,): sum of exp(-(S - min_b) / lambda)
    part_q: np.ndarray  # float64 (blocks,): sum of its squares
    part_a: np.ndarray  # float64 (blocks, T * m): weighted perturbation sums
    counter: np.ndarray  # int32 (1,): blocks finished (the last one combines)
