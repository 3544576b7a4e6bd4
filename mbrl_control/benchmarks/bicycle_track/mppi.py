"""MPPI on bicycle-track: the problem as a :class:`~mbrl_control.problem.definition.ControlProblem`,
run by the generic :class:`~mbrl_control.control.mppi_solver.MPPISolver`.

The model (:mod:`.model`) and the cost (:mod:`.cost`) are definitions; the MPPI iteration is the
solver's, written once for every problem: on the ``numba`` backend the fused CPU kernel generated
for this problem's shape (:mod:`mbrl_control.kernels.mppi_generated`), on ``torch`` the same
definitions evaluated on tensors (float64). PROBLEM.md section 3 maps onto :class:`SolverConfig` as
``temperature = lambda``, ``control_cost_weight = 1`` (the charge ``lambda * U^T Sigma^-1 eps'`` on
the clipped noise), ``shift_fill = "zero"`` (warm start padded with ``u = 0``); the noise is the
counter-based stream of :mod:`mbrl_control.kernels.noise` (``stream_key(seed, call)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mbrl_control.benchmarks.bicycle_track.cost import BicycleTrackCost
from mbrl_control.benchmarks.bicycle_track.model import BicycleTrackModel, BicycleTrackParams
from mbrl_control.benchmarks.bicycle_track.problem import Controller
from mbrl_control.benchmarks.bicycle_track.settings import BicycleTrackSettings
from mbrl_control.models.bicycle_track_spec import DT_S
from mbrl_control.problem.definition import ControlProblem, CostSpec

if TYPE_CHECKING:
    from mbrl_control.control.mppi_solver import SolverConfig

BACKENDS = ("numba", "torch")


def control_problem() -> ControlProblem:
    """bicycle-track as data: its model, its cost with PROBLEM.md's weights, one Euler step of ``dt``."""
    return ControlProblem(BicycleTrackModel, (CostSpec(BicycleTrackCost, BicycleTrackCost.weight_vector()),),
                          dt_s=DT_S, integrator="euler", substeps=1)


def solver_config(settings: BicycleTrackSettings, seed: int = 0, backend: str = "numba") -> SolverConfig:
    """The generic solver's settings equivalent to ``settings`` (canonical or tuned variant)."""
    from mbrl_control.control.mppi_solver import SolverConfig  # Numba on first use, not on importing the problem

    return SolverConfig(samples=settings.samples, horizon=settings.horizon,
                        sigma=(settings.sigma_accel, settings.sigma_steer), iterations=1, temperature=settings.lam,
                        control_cost_weight=1.0, noise_alpha=settings.noise_alpha,
                        null_samples=settings.null_samples, smoothing_window=settings.smoothing_window,
                        smoothing_order=settings.smoothing_order, shift_fill="zero", seed=int(seed), backend=backend)


class BicycleTrackMPPI:
    """MPPI on bicycle-track: a controller ``x -> (a, delta)``, deterministic for a seed.

    ``U`` is the nominal sequence after the warm-start shift (float32 (T, 2)). A non-finite
    result (no finite sample) is returned as NaN, which the closed loop applies as 0.
    """

    def __init__(self, settings: BicycleTrackSettings, seed: int = 0, backend: str = "numba") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"bicycle-track MPPI has no backend {backend!r} (numba or torch)")
        from mbrl_control.control.mppi_solver import MPPISolver, PredictionModel

        self.settings = settings
        self.seed = int(seed)
        self.solver = MPPISolver(control_problem(), PredictionModel(BicycleTrackParams()),
                                 solver_config(settings, seed, backend))
        self._x = np.zeros(4, dtype=np.float32)

    @property
    def U(self) -> np.ndarray:
        return self.solver.U

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """One MPPI step from state ``x``: the control ``(a, delta)`` to apply now (within the bounds)."""
        self._x[:] = x
        u = self.solver.step(self._x)
        return np.full(2, np.nan) if u is None else u


def make_bicycle_mppi(backend: str, settings: BicycleTrackSettings, seed: int = 0) -> Controller:
    """MPPI controller ``x -> (a, delta)`` on bicycle-track: backend 'numba' or 'torch' of the generic solver."""
    return BicycleTrackMPPI(settings, seed=seed, backend=backend)
