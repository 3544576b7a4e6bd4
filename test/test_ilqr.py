"""iLQR / DDP solve: Riccati equivalence, box QP, monotone cost, DDP vs iLQR, bicycle-track quality."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mbrl_control.benchmarks import bicycle_track as bt
from mbrl_control.kernels import ilqr as kern
from mbrl_control.benchmarks.bicycle_track.gradient import bicycle_track_problem
from mbrl_control.kernels.ilqr_lq import lq_problem


def _random_lq(seed: int, n: int = 4, m: int = 2):
    rng = np.random.default_rng(seed)
    A = np.eye(n) + 0.1 * rng.normal(size=(n, n))
    B = 0.2 * rng.normal(size=(n, m))
    Q = np.diag(rng.uniform(0.5, 2.0, n))
    R = np.diag(rng.uniform(0.1, 1.0, m))
    N = 0.05 * rng.normal(size=(m, n))
    Qf = 5.0 * np.eye(n)
    return A, B, Q, R, N, Qf, rng.normal(size=n)


def _riccati(A, B, Q, R, N, Qf, x0, T):
    """Independent discrete-time finite-horizon LQR (dynamic programming with cross term)."""
    P = Qf.copy()
    gains = [None] * T
    for t in range(T - 1, -1, -1):
        S = R + B.T @ P @ B
        Kt = -np.linalg.solve(S, N + B.T @ P @ A)
        gains[t] = Kt
        P = Q + A.T @ P @ A + (N + B.T @ P @ A).T @ Kt
        P = 0.5 * (P + P.T)
    x, U = x0.copy(), []
    for t in range(T):
        U.append(gains[t] @ x)
        x = A @ x + B @ U[-1]
    return np.array(U), np.array(gains)


@pytest.mark.parametrize("seed", [0, 1])
def test_lq_one_iteration_equals_riccati(seed):
    A, B, Q, R, N, Qf, x0 = _random_lq(seed)
    T = 25
    ws = kern.make_workspace(4, 2, T, np.full(2, -1e9), np.full(2, 1e9))
    _, iters, _ = kern.solve(lq_problem(A, B, Q, R, Qf, N), x0, ws, kern.solver_options(max_iter=1, mu_init=0.0, mu_min=0.0))
    U_ref, K_ref = _riccati(A, B, Q, R, N, Qf, x0, T)
    assert iters == 1
    np.testing.assert_allclose(ws.U, U_ref, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ws.K, K_ref, rtol=0, atol=1e-8)


def test_lq_converges_after_one_step():
    A, B, Q, R, N, Qf, x0 = _random_lq(3)
    ws = kern.make_workspace(4, 2, 20, np.full(2, -1e9), np.full(2, 1e9))
    _, iters, status = kern.solve(lq_problem(A, B, Q, R, Qf, N), x0, ws, kern.solver_options(max_iter=10, mu_init=0.0))
    assert status == kern.CONVERGED and iters <= 2


def _box_qp_brute(H, g, lo, hi):
    """Enumerate active sets (each coordinate free / at lo / at hi); best feasible KKT candidate."""
    m = len(g)
    best, best_x = np.inf, None
    for pattern in itertools.product((0, 1, 2), repeat=m):
        x = np.zeros(m)
        free = [i for i in range(m) if pattern[i] == 0]
        for i in range(m):
            x[i] = lo[i] if pattern[i] == 1 else hi[i] if pattern[i] == 2 else 0.0
        if free:
            fixed = [i for i in range(m) if pattern[i] != 0]
            rhs = -(g[free] + H[np.ix_(free, fixed)] @ x[fixed]) if fixed else -g[free]
            x[free] = np.linalg.solve(H[np.ix_(free, free)], rhs)
        if np.all(x >= lo - 1e-12) and np.all(x <= hi + 1e-12):
            v = 0.5 * x @ H @ x + g @ x
            if v < best:
                best, best_x = v, x
    return best_x


@pytest.mark.parametrize("m", [2, 3])
def test_box_qp_matches_enumeration(m):
    rng = np.random.default_rng(m)
    for _ in range(50):
        M = rng.normal(size=(m, m))
        H = M @ M.T + 0.1 * np.eye(m)
        g = 3.0 * rng.normal(size=m)
        lo, hi = -rng.uniform(0.1, 1.0, m), rng.uniform(0.1, 1.0, m)
        x = rng.uniform(lo, hi)
        free = np.zeros(m, dtype=np.int64)
        assert kern.box_qp(H, g, lo, hi, x, free, np.zeros((m + 9, m)))
        np.testing.assert_allclose(x, _box_qp_brute(H, g, lo, hi), atol=1e-9)


def _bt_solve(U0, ddp, **kw):
    ws = kern.make_workspace(4, 2, bt.HORIZON, bt.U_MIN, bt.U_MAX)
    ws.U[:] = U0
    opts = kern.solver_options(**{"max_iter": 50, "ddp": ddp, "tol_cost": 1e-12, "tol_grad": 1e-8, **kw})
    J, iters, status = kern.solve(bicycle_track_problem(), bt.X0, ws, opts)
    return ws, J, iters, status


def test_bicycle_cost_matches_problem_and_decreases_monotonically():
    ws, J, iters, status = _bt_solve(np.zeros((bt.HORIZON, 2)), ddp=False)
    assert status == kern.CONVERGED
    costs = ws.costs[: iters + 1]
    assert np.all(np.diff(costs) <= 0.0)
    assert costs[-1] < costs[0]
    # the solver's cost is PROBLEM.md's J (stage form with the constant q(x_0) dropped)
    assert J == pytest.approx(float(bt.trajectory_cost(bt.X0, ws.U)), rel=1e-12)
    assert np.all(ws.U >= bt.U_MIN) and np.all(ws.U <= bt.U_MAX)
    assert np.any(np.isclose(ws.U, bt.U_MAX)) or np.any(np.isclose(ws.U, bt.U_MIN))  # limits are active from rest


def test_ddp_reaches_the_same_optimum_and_needs_no_more_iterations_than_ilqr():
    _, J_i, it_i, st_i = _bt_solve(np.zeros((bt.HORIZON, 2)), ddp=False)
    _, J_d, it_d, st_d = _bt_solve(np.zeros((bt.HORIZON, 2)), ddp=True)
    assert st_i == st_d == kern.CONVERGED
    assert J_d == pytest.approx(J_i, rel=1e-9)
    # the warm-started closed loop of PROBLEM.md, each solve to a tight tolerance: DDP's exact
    # Hessian converges quadratically where iLQR's Gauss-Newton model does not
    totals = {}
    for ddp in (False, True):
        ws = kern.make_workspace(4, 2, bt.HORIZON, bt.U_MIN, bt.U_MAX)
        opts = kern.solver_options(max_iter=30, ddp=ddp, tol_cost=1e-12, tol_grad=1e-9)
        iterations = []

        def controller(x):
            _, iters, status = kern.solve(bicycle_track_problem(), x, ws, opts)
            assert status == kern.CONVERGED
            iterations.append(iters)
            u = ws.U[0].copy()
            kern.shift_plan(ws.U, ws.K, True)
            return u

        bt.run_closed_loop(controller, steps=60)
        totals[ddp] = sum(iterations[1:])  # the warm-started solves
    assert totals[True] <= totals[False]


def test_bicycle_track_closed_loop_quality_and_iteration_counts():
    from mbrl_control.apps.ilqr_bench import bicycle_track_ilqr

    for ddp in (False, True):
        controller, iterations = bicycle_track_ilqr(bt.HORIZON, ddp=ddp)
        res = bt.run_closed_loop(controller)
        q = bt.quality(res.states)
        assert q.max_abs_d_m <= 1e-3
        assert q.mean_abs_speed_error_mps <= 1e-3
        assert max(iterations) <= 10


def test_bench_rows_have_the_design_keys():
    import argparse

    from mbrl_control import MbrlError
    from mbrl_control.apps.ilqr_bench import run_ilqr_bench

    rows = run_ilqr_bench(argparse.Namespace(problem="bicycle-track", horizon=None, backend="numba"))
    assert [r["variant"] for r in rows] == ["ilqr", "ddp"]
    for r in rows:
        for key in ("controller", "backend", "problem", "samples", "horizon", "median_ms", "p95_ms", "peer", "peer_median_ms"):
            assert key in r
        assert r["controller"] == "ilqr" and r["samples"] is None and r["horizon"] == bt.HORIZON
        assert r["max_abs_d_m"] <= 1e-3 and r["peer_mean_abs_d_m"] <= 1e-3  # both solve the problem
    with pytest.raises(MbrlError, match="backend"):
        run_ilqr_bench(argparse.Namespace(problem="bicycle-track", backend="cuda"))
    with pytest.raises(MbrlError, match="unknown problem"):
        run_ilqr_bench(argparse.Namespace(problem="nope", backend=None))
