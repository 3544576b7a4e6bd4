"""iLQR/DDP and the CasADi/IPOPT NMPC on bicycle-track: the generic gradient-based solvers on
:func:`~mbrl_control.benchmarks.bicycle_track.mppi.control_problem`.

Both take everything from the model's and the cost's one definition (:mod:`.model`, :mod:`.cost`),
with PROBLEM.md's weights in float64 (:func:`problem_weights`; the problem's own weight vector is
float32 data for MPPI). iLQR uses the split form of :mod:`mbrl_control.kernels.ilqr_problem`
(the cost is a state part plus a control part: ``l_t = [t > 0] q(x_t) + r(u_t)``, final ``q(x_T)``);
the solver's cost is then PROBLEM.md's ``J`` exactly (the constant ``q(x_0)`` dropped).
"""

from __future__ import annotations

import numpy as np

from mbrl_control.benchmarks.bicycle_track.cost import BicycleTrackCost
from mbrl_control.benchmarks.bicycle_track.model import BicycleTrackParams
from mbrl_control.benchmarks.bicycle_track.mppi import control_problem
from mbrl_control.models import bicycle_track_spec as spec


def problem_weights() -> np.ndarray:
    """The cost's default weights (PROBLEM.md's) in float64, in the cost's weight order."""
    return np.array([w.default for w in BicycleTrackCost.weights], dtype=np.float64)


def bicycle_track_problem():
    """The generated iLQR problem (namedtuple for :func:`mbrl_control.kernels.ilqr.solve`)."""
    from mbrl_control.kernels.ilqr_problem import make_problem

    return make_problem(control_problem(), BicycleTrackParams(), problem_weights(), split=True)


class BicycleTrackNMPC:
    """PROBLEM.md bicycle-track as a multiple-shooting NLP; ``__call__(x) -> u`` for the closed loop."""

    def __init__(self, horizon: int | None = None, ipopt_options: dict | None = None) -> None:
        from mbrl_control.control.problem_solvers import ProblemNMPC

        T = spec.HORIZON if horizon is None else int(horizon)
        self.solver = ProblemNMPC(control_problem(), BicycleTrackParams(), T, weights=problem_weights(),
                                  ipopt_options=ipopt_options)
        self.nlp = self.solver.nlp
        self.iterations: list[int] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        X, U = self.nlp.solve(x)
        self.iterations.append(self.nlp.last_iterations)
        return U[0].copy()
