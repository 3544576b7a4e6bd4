"""Acceptance 1 of the one-definition design: a model and a cost term defined in one file each,
outside the package, run through iLQR/DDP (derivatives checked by finite differences) and NMPC."""

from __future__ import annotations

import numpy as np
import pytest

from goal_cost import GoalCost
from mbrl_control.control.problem_solvers import ProblemILQR, ProblemNMPC
from mbrl_control.kernels.ilqr_problem import ilqr_module, make_problem
from mbrl_control.problem.definition import ControlProblem, CostSpec
from numpy_rk4 import rk4_step
from unicycle_model import Unicycle, UnicycleParams

PARAMS = UnicycleParams()
X0 = np.array([0.0, 0.0, 0.3, 0.5])


def _problem(integrator: str = "rk4") -> ControlProblem:
    return ControlProblem(Unicycle, (CostSpec(GoalCost, GoalCost.weight_vector()),), dt_s=0.1,
                          integrator=integrator, substeps=2)


def _numpy_step(x, u, dt=0.1, substeps=2):
    """Independent RK4 of the NumPy evaluation of the same definition."""
    return rk4_step(Unicycle, PARAMS, x, u, dt, substeps)


def test_generated_step_matches_numpy_and_its_jacobian_matches_finite_differences():
    mod = ilqr_module(_problem())
    prob = make_problem(_problem(), PARAMS)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, u = rng.normal(size=4), rng.normal(size=2)
        out = np.zeros(4)
        mod.step_f(x, u, prob.p, out)
        np.testing.assert_allclose(out, _numpy_step(x, u), rtol=1e-12, atol=1e-12)
        jac = np.zeros((4, 6))
        mod.step_jac(x, u, prob.p, jac)
        w0, eps = np.concatenate([x, u]), 1e-6
        fd = np.stack([(_numpy_step((w0 + eps * e)[:4], (w0 + eps * e)[4:]) -
                        _numpy_step((w0 - eps * e)[:4], (w0 - eps * e)[4:])) / (2 * eps) for e in np.eye(6)], axis=1)
        np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-7)
        lam = rng.normal(size=4)
        hess = np.zeros((6, 6))
        mod.step_hess(x, u, lam, prob.p, hess)

        def lam_jac(w):
            j = np.zeros((4, 6))
            mod.step_jac(w[:4], w[4:], prob.p, j)
            return lam @ j

        fd_h = np.stack([(lam_jac(w0 + eps * e) - lam_jac(w0 - eps * e)) / (2 * eps) for e in np.eye(6)], axis=1)
        np.testing.assert_allclose(hess, fd_h, rtol=1e-5, atol=1e-6)


def test_generated_stage_cost_gradient_matches_finite_differences():
    mod = ilqr_module(_problem())
    prob = make_problem(_problem(), PARAMS)
    rng = np.random.default_rng(1)
    x, u = rng.normal(size=4), rng.normal(size=2)
    value = np.zeros(1)

    def cost(w):
        mod.stage_value(w[:4], w[4:], prob.p, prob.w, value)
        return value[0]

    grad = np.zeros(6)
    mod.stage_grad(x, u, prob.p, prob.w, grad)
    w0, eps = np.concatenate([x, u]), 1e-6
    fd = np.array([(cost(w0 + eps * e) - cost(w0 - eps * e)) / (2 * eps) for e in np.eye(6)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)
    # the cost is charged on the state the step reaches: an independent evaluation
    xn = _numpy_step(x, u)
    w_speed, w_effort = float(np.float32(0.05)), float(np.float32(0.01))  # weights are float32 data
    expected = (xn[0] - 3.0) ** 2 + (xn[1] - 2.0) ** 2 + w_speed * xn[3] ** 2 + w_effort * (u @ u)
    assert cost(w0) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("ddp", [False, True])
def test_ilqr_and_ddp_drive_the_unicycle_to_the_goal(ddp):
    solver = ProblemILQR(_problem(), PARAMS, horizon=40, ddp=ddp, max_iter=100)
    plan = solver.solve(X0, np.zeros((40, 2)))
    assert plan.status in ("converged", "max_iter")
    assert np.hypot(plan.states[-1, 0] - 3.0, plan.states[-1, 1] - 2.0) < 0.3
    lo, hi = Unicycle.control_bounds(PARAMS)
    assert np.all(plan.controls >= lo - 1e-12) and np.all(plan.controls <= hi + 1e-12)
    # the returned trajectory is the model's own rollout of the returned controls
    x = X0.copy()
    for u in plan.controls:
        x = _numpy_step(x, u)
    np.testing.assert_allclose(plan.states[-1], x, atol=1e-9)


def test_nmpc_agrees_with_ilqr_on_the_same_problem():
    problem = _problem()
    ilqr_plan = ProblemILQR(problem, PARAMS, horizon=20, max_iter=200).solve(X0, np.zeros((20, 2)))
    nmpc_plan = ProblemNMPC(problem, PARAMS, horizon=20).solve(X0)
    assert nmpc_plan.status == "converged"
    mod, prob = ilqr_module(problem), make_problem(problem, PARAMS)

    def objective(controls):
        x, total, value = X0.copy(), 0.0, np.zeros(1)
        for u in controls:
            mod.stage_value(x, u, prob.p, prob.w, value)
            total += value[0]
            x = _numpy_step(x, u)
        return total

    j_ilqr, j_nmpc = objective(ilqr_plan.controls), objective(nmpc_plan.controls)
    assert j_nmpc == pytest.approx(j_ilqr, rel=1e-4)  # the same optimum, reached by two solvers
    np.testing.assert_allclose(nmpc_plan.controls, ilqr_plan.controls, atol=2e-2)
