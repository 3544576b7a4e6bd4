"""Gradient-based solvers for any smooth :class:`~mbrl_control.problem.definition.ControlProblem`.

:class:`ProblemILQR` runs the compiled iLQR / control-limited DDP of :mod:`mbrl_control.kernels.ilqr`
on the problem's generated derivatives (:mod:`mbrl_control.kernels.ilqr_problem`);
:class:`ProblemNMPC` is the CasADi/IPOPT multiple-shooting reference on the same expressions.
Both derive everything from the motion model's and cost terms' one definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbrl_control.problem.definition import ControlProblem


@dataclass
class Plan:
    """A solve's result: states (T+1, n), controls (T, m), cost, iterations, status name."""

    states: np.ndarray
    controls: np.ndarray
    cost: float
    iterations: int
    status: str


class ProblemILQR:
    """iLQR (or DDP with ``ddp=True``) over a horizon of ``horizon`` steps; workspace allocated once."""

    def __init__(self, problem: ControlProblem, params, horizon: int, *, ddp: bool = False, max_iter: int = 50,
                 weights: np.ndarray | None = None) -> None:
        from mbrl_control.kernels import ilqr
        from mbrl_control.kernels.ilqr_problem import make_problem

        self.problem = problem.validate()
        model = problem.model
        lo, hi = model.control_bounds(params)
        self.prob = make_problem(problem, params, weights)
        self.ws = ilqr.make_workspace(model.state_dim(), model.control_dim(), horizon, lo, hi, max_iter=max_iter)
        self.opts = ilqr.solver_options(max_iter=max_iter, ddp=ddp)

    def solve(self, x0: np.ndarray, controls: np.ndarray | None = None) -> Plan:
        """Optimise from ``x0`` (warm start: ``controls`` or the previous solution)."""
        from mbrl_control.kernels import ilqr

        if controls is not None:
            self.ws.U[:] = controls
        cost, iterations, status = ilqr.solve(self.prob, np.asarray(x0, dtype=np.float64), self.ws, self.opts)
        return Plan(self.ws.X.copy(), self.ws.U.copy(), float(cost), int(iterations),
                    ilqr.STATUS_NAMES.get(int(status), str(status)))


class ProblemNMPC:
    """IPOPT on the multiple-shooting NLP of the problem (numeric parameters and weights)."""

    def __init__(self, problem: ControlProblem, params, horizon: int, weights: np.ndarray | None = None,
                 ipopt_options: dict | None = None) -> None:
        from mbrl_control.control.nmpc import MultipleShootingNLP
        from mbrl_control.problem.symbolic import casadi_stage_cost, casadi_step, check_smooth

        self.problem = problem.validate()
        check_smooth(problem)
        model = problem.model
        p = model.param_vector(params, np.float64)
        w = np.concatenate([s.weights for s in problem.costs]).astype(np.float64) if weights is None else weights
        lo, hi = model.control_bounds(params)
        self.nlp = MultipleShootingNLP(
            model.state_dim(), model.control_dim(), horizon,
            step=lambda x, u: casadi_step(problem, x, u, p),
            stage=lambda t, x, u, P: casadi_stage_cost(problem, x, u, p, w),
            final=lambda x, P: 0, u_lo=lo, u_hi=hi, ipopt_options=ipopt_options)

    def solve(self, x0: np.ndarray, controls: np.ndarray | None = None) -> Plan:
        X, U = self.nlp.solve(np.asarray(x0, dtype=np.float64), controls)
        status = "converged" if self.nlp.last_success else "failed"
        return Plan(X, U, float("nan"), self.nlp.last_iterations, status)
