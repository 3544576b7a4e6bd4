"""Exact derivatives: CasADi form of the definitions == torch models, generated kernels == CasADi,
RK4 / residual Jacobians and multiplier-weighted Hessians == torch autograd == finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_control.config import load_vehicle_params
from mbrl_control.problem.costs.racing import RacingCostConfig
from mbrl_control.control.ilqr import ILQRConfig, track_spline
from mbrl_control.kernels.casadi_codegen import ilqr_derivatives
from mbrl_control.kernels import ilqr_vehicle as kv
from mbrl_control.models import derivatives as der
from mbrl_control.models.bicycle import DynamicSingleTrack, KinematicBicycle
from mbrl_control.models.layout import CONTROL_NAMES, STATE_NAMES, S
from mbrl_control.problem.costs.contouring import REF_FIELDS, WEIGHT_FIELDS, ContouringCost
from mbrl_control.track import Track

gen = ilqr_derivatives()
PARAMS = load_vehicle_params()
CLASSES = {"dynamic": DynamicSingleTrack, "kinematic": KinematicBicycle}


def _states(rng, n=12):
    """Random states over the model's regimes: kinematic, blend and dynamic speeds, both signs of v."""
    speeds = np.array([0.2, 0.7, 0.9, 2.0, 6.0, 9.0, -0.8, -2.0, 12.0, 4.0, 1.5, 0.6])[:n]
    out = []
    for v in speeds:
        s = np.zeros(7)
        s[S.X], s[S.Y] = rng.normal(size=2)
        s[S.STEER] = rng.uniform(-0.35, 0.35)
        s[S.V] = v
        s[S.YAW] = rng.uniform(-3, 3)
        s[S.YAW_RATE] = rng.normal() * 0.5
        s[S.SLIP] = rng.normal() * 0.05
        out.append((s, np.array([rng.uniform(-0.4, 0.4), rng.uniform(-8, 8)])))
    return out


def _circle_track(radius=20.0, n=200):
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    xy = np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)
    return Track("circle", xy, np.full(n, 1.1), np.full(n, 1.1))


def _problem(model, residual=None):
    from mbrl_control.control.ilqr import model_description

    kind, pvec, dt, sub, rk4, res = model_description(model)
    spline = track_spline(_circle_track(), RacingCostConfig())
    return kv.make_vehicle_problem(kind, pvec, dt, sub, rk4, 4, np.zeros(len(WEIGHT_FIELDS)), spline, res)


@pytest.mark.parametrize("kind", ["dynamic", "kinematic"])
def test_casadi_mirror_equals_torch_model(kind):
    f = der.casadi_function(kind, PARAMS)
    model = CLASSES[kind](PARAMS, dt_s=0.02)
    for s, u in _states(np.random.default_rng(0)):
        ref = model.derivative(torch.tensor(s), torch.tensor(u)).numpy()
        np.testing.assert_allclose(np.asarray(f(s, u)).ravel(), ref, rtol=1e-13, atol=1e-12)
    # actuator limits: steering blocked at its bound, acceleration power limit, reverse speed bound
    s = np.zeros(7)
    s[S.STEER], s[S.V] = PARAMS.steer_max_rad, 8.0
    for u in (np.array([0.6, 9.0]), np.array([-0.1, -9.0])):
        ref = model.derivative(torch.tensor(s), torch.tensor(u)).numpy()
        np.testing.assert_allclose(np.asarray(f(s, u)).ravel(), ref, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("kind", ["dynamic", "kinematic"])
def test_generated_kernels_equal_fresh_casadi(kind):
    import casadi as ca

    s, u, lam = ca.SX.sym("s", 7), ca.SX.sym("u", 2), ca.SX.sym("lam", 7)
    p = {n: getattr(PARAMS, n) for n in der.PARAM_NAMES}
    expr = der.single_track_derivative(kind, s, u, p)
    w = ca.vertcat(s, u)
    fn = ca.Function("f", [s, u, lam], [expr, ca.jacobian(expr, w), ca.hessian(ca.dot(lam, expr), w)[0]])
    pvec = der.param_vector(PARAMS)
    rng = np.random.default_rng(1)
    for x, uu in _states(rng):
        lv = rng.normal(size=7)
        f_ref, j_ref, h_ref = (np.asarray(a) for a in fn(x, uu, lv))
        out, jac, hess = np.zeros(7), np.zeros((7, 9)), np.zeros((9, 9))
        getattr(gen, f"st_{kind}_f")(x, uu, pvec, out)
        getattr(gen, f"st_{kind}_jac")(x, uu, pvec, jac)
        getattr(gen, f"st_{kind}_hess")(x, uu, lv, pvec, hess)
        np.testing.assert_allclose(out, f_ref.ravel(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(jac, j_ref, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(hess, h_ref, rtol=1e-12, atol=1e-9)


def _fd_jacobian(prob, x, u, eps=1e-6):
    w = np.concatenate([x, u])
    J = np.zeros((7, 9))
    a, b = np.zeros(7), np.zeros(7)
    for i in range(9):
        wp, wm = w.copy(), w.copy()
        wp[i] += eps
        wm[i] -= eps
        kv.vehicle_step(prob, wp[:7], wp[7:], a)
        kv.vehicle_step(prob, wm[:7], wm[7:], b)
        J[:, i] = (a - b) / (2 * eps)
    return J


def _fd_lam_hessian(prob, x, u, lam, eps=1e-5):
    """Central differences of the exact Jacobian: d/dw (lam' dF/dw)."""
    w = np.concatenate([x, u])
    H = np.zeros((9, 9))
    Dp, Dm = np.zeros((7, 9)), np.zeros((7, 9))
    for i in range(9):
        wp, wm = w.copy(), w.copy()
        wp[i] += eps
        wm[i] -= eps
        kv.vehicle_jacobian(prob, wp[:7], wp[7:], Dp)
        kv.vehicle_jacobian(prob, wm[:7], wm[7:], Dm)
        H[:, i] = lam @ (Dp - Dm) / (2 * eps)
    return 0.5 * (H + H.T)


def _check_step_derivatives(model, prob, cases, rng):
    for x, u in cases:
        lam = rng.normal(size=7)
        value, jx, ju, hess = der.autograd_step_derivatives(model, x, u, lam)
        xn, D, H = np.zeros(7), np.zeros((7, 9)), np.zeros((9, 9))
        kv.vehicle_step(prob, x, u, xn)
        kv.vehicle_jacobian(prob, x, u, D)
        kv.vehicle_hessian(prob, x, u, lam, H)
        np.testing.assert_allclose(xn, value, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(D, np.hstack([jx, ju]), rtol=1e-10, atol=1e-11)
        np.testing.assert_allclose(H, hess, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(D, _fd_jacobian(prob, x, u), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(H, _fd_lam_hessian(prob, x, u, lam), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind,integrator,substeps", [("dynamic", "rk4", 1), ("dynamic", "rk4", 2),
                                                      ("dynamic", "euler", 3)])
def test_step_derivatives_match_autograd_and_finite_differences(kind, integrator, substeps):
    model = CLASSES[kind](PARAMS, dt_s=0.02, integrator=integrator, substeps=substeps)
    rng = np.random.default_rng(2)
    cases = [c for c in _states(rng) if abs(abs(c[0][S.V]) - 0.5) > 0.05 and abs(abs(c[0][S.V]) - 1.0) > 0.05]
    _check_step_derivatives(model, _problem(model), cases[:6], rng)


def _residual_model():
    from mbrl_control.models.residual import ResidualEnsemble
    from mbrl_control.models.semiparametric import SemiParametricModel

    physics = DynamicSingleTrack(PARAMS, dt_s=0.02, dtype=torch.float64)
    residual = ResidualEnsemble(members=3, hidden=(8, 5), seed=3, dtype=torch.float64)
    rng = np.random.default_rng(4)
    with torch.no_grad():  # make the correction large enough to matter in the comparison
        for w in residual.weights:
            w.mul_(2.0)
    residual.set_normalisation(rng.normal(size=6) * 0.1, rng.uniform(0.5, 2.0, 6), rng.normal(size=3) * 0.01,
                               rng.uniform(0.01, 0.1, 3))
    return SemiParametricModel(physics, residual).to(torch.float64)


def test_semiparametric_step_derivatives_include_the_residual_mlp():
    model = _residual_model()
    prob = _problem(model)
    rng = np.random.default_rng(5)
    cases = [c for c in _states(rng) if abs(c[0][S.V]) > 1.1][:4]
    _check_step_derivatives(model, prob, cases, rng)
    # the residual really contributes: its Jacobian is not zero
    x, u = cases[0]
    out, jac = np.zeros(3), np.zeros((3, 9))
    kv.residual_eval(prob, x, u, 1, out, jac, np.zeros(3), np.zeros((9, 9)))
    assert np.abs(out).max() > 1e-4 and np.abs(jac).max() > 1e-4


def _random_racing_point(rng):
    """A random state, control and reference point (unit tangent) for the racing-cost checks."""
    x = np.zeros(7)
    x[S.X], x[S.Y] = rng.normal(size=2)
    x[S.STEER], x[S.V], x[S.YAW] = rng.uniform(-0.3, 0.3), rng.uniform(-2.0, 14.0), rng.uniform(-3, 3)
    x[S.YAW_RATE], x[S.SLIP] = rng.normal() * 1.5, rng.normal() * 0.05
    u = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-5, 5)])
    t = rng.normal(size=2)
    t /= np.linalg.norm(t)
    ref = np.array([rng.normal(), rng.normal(), t[0], t[1], rng.normal() * 0.2, 0.6, 0.6, 8.0])
    return x, u, ref


def test_racing_cost_derivatives_match_finite_differences():
    rng = np.random.default_rng(6)
    w = ILQRConfig(lag_weight=0.3, cost={"slip_weight": 0.2, "lateral_weight": 0.1}).weight_vector(PARAMS, 0.02)
    for _ in range(6):
        x, u, ref = _random_racing_point(rng)
        g, H, v = np.zeros(9), np.zeros((9, 9)), np.zeros(1)
        gen.rc_stage_grad(x, u, ref, w, g)
        gen.rc_stage_hess(x, u, ref, w, H)

        def value(wv):
            gen.rc_stage_value(wv[:7], wv[7:], ref, w, v)
            return v[0]

        def grad(wv):
            out = np.zeros(9)
            gen.rc_stage_grad(wv[:7], wv[7:], ref, w, out)
            return out

        w0 = np.concatenate([x, u])
        eps = 1e-6
        g_fd = np.array([(value(w0 + eps * e) - value(w0 - eps * e)) / (2 * eps) for e in np.eye(9)])
        H_fd = np.array([(grad(w0 + eps * e) - grad(w0 - eps * e)) / (2 * eps) for e in np.eye(9)])
        np.testing.assert_allclose(g, g_fd, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(H, H_fd, rtol=1e-4, atol=1e-5)
        # value against an independent numpy evaluation of the documented formula
        dx, dy = x[S.X] - ref[0], x[S.Y] - ref[1]
        e_c, e_l = -ref[3] * dx + ref[2] * dy, ref[2] * dx + ref[3] * dy
        hd = x[S.YAW] + x[S.SLIP]
        q = dict(zip(WEIGHT_FIELDS, w))
        a_lat = x[S.V] * x[S.YAW_RATE]
        def hinge(r, eps):
            return (0.5 * (r + np.sqrt(r * r + eps * eps))) ** 2

        eb, es, ea = q["eps_bound"], q["eps_speed"], q["eps_lat_accel"]
        expect = (-q["progress"] * q["dt"] * x[S.V] * (np.cos(hd) * ref[2] + np.sin(hd) * ref[3]) / max(1 - ref[4] * e_c, 0.25)
                  + q["lateral"] * e_c**2 + q["lag"] * e_l**2
                  + q["bound"] * (hinge(e_c - ref[5], eb) + hinge(-e_c - ref[6], eb))
                  + q["bound_hard"] * (hinge(e_c - ref[5] - q["hard_gap"], eb) + hinge(-e_c - ref[6] - q["hard_gap"], eb))
                  + q["lat_accel"] * (hinge(a_lat - q["lat_accel_max"], ea) + hinge(-a_lat - q["lat_accel_max"], ea))
                  + q["speed_cap"] * hinge(x[S.V] - ref[7], es) + q["slip"] * x[S.SLIP] ** 2
                  + q["reverse"] * hinge(-x[S.V], es)
                  + q["steer"] * u[0] ** 2 + q["accel"] * u[1] ** 2 + q["servo"] * (u[0] - x[S.STEER]) ** 2)
        assert value(w0) == pytest.approx(expect, rel=1e-12, abs=1e-12)


def test_racing_final_cost_is_the_state_part_and_its_kernels_match_finite_differences():
    from mbrl_control.ops import numpy_ops, record

    rng = np.random.default_rng(8)
    w = ILQRConfig(lag_weight=0.4, cost={"slip_weight": 0.3, "lateral_weight": 0.2, "steer_rate_weight": 0.004}
                   ).weight_vector(PARAMS, 0.02)
    assert tuple(REF_FIELDS) == ContouringCost.context and tuple(WEIGHT_FIELDS) == ContouringCost.weight_names()
    for _ in range(8):
        x, u, ref = _random_racing_point(rng)
        v, vs, g, H = np.zeros(1), np.zeros(1), np.zeros(7), np.zeros((7, 7))
        gen.rc_final_value(x, ref, w, v)
        gen.rc_final_grad(x, ref, w, g)
        gen.rc_final_hess(x, ref, w, H)
        gen.rc_stage_value(x, u, ref, w, vs)
        q = dict(zip(WEIGHT_FIELDS, w))
        control_part = q["steer"] * u[0] ** 2 + q["accel"] * u[1] ** 2 + q["servo"] * (u[0] - x[S.STEER]) ** 2
        assert v[0] == pytest.approx(vs[0] - control_part, rel=1e-12, abs=1e-12)
        # the NumPy evaluation of the same definition
        xr, ctx, wr = record(STATE_NAMES, x), record(REF_FIELDS, ref), record(WEIGHT_FIELDS, w)
        assert ContouringCost.state_cost(numpy_ops, xr, ctx, wr) == pytest.approx(v[0], rel=1e-12, abs=1e-12)
        stage, carry = ContouringCost.stage(numpy_ops, xr, record(CONTROL_NAMES, u), None, ctx, (), wr)
        assert stage == pytest.approx(vs[0], rel=1e-12, abs=1e-12) and carry == ()

        def value(xv):
            out = np.zeros(1)
            gen.rc_final_value(xv, ref, w, out)
            return out[0]

        def grad(xv):
            out = np.zeros(7)
            gen.rc_final_grad(xv, ref, w, out)
            return out

        eps = 1e-6
        g_fd = np.array([(value(x + eps * e) - value(x - eps * e)) / (2 * eps) for e in np.eye(7)])
        H_fd = np.array([(grad(x + eps * e) - grad(x - eps * e)) / (2 * eps) for e in np.eye(7)])
        np.testing.assert_allclose(g, g_fd, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(H, H_fd, rtol=1e-4, atol=1e-5)


def test_bicycle_track_split_kernels_equal_problem_definition():
    """The generated split-form iLQR of bicycle-track: step == PROBLEM.md's, q(x) + r(u) == its stage cost."""
    from mbrl_control.benchmarks import bicycle_track as bt
    from mbrl_control.benchmarks.bicycle_track.gradient import bicycle_track_problem
    from mbrl_control.kernels.ilqr_problem import ilqr_module

    mod, prob = ilqr_module(bt.control_problem(), split=True), bicycle_track_problem()
    rng = np.random.default_rng(7)
    for _ in range(10):
        x = np.array([rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(-4, 4), rng.uniform(-1, 5)])
        u = rng.uniform(bt.U_MIN, bt.U_MAX)
        out, q, r = np.zeros(4), np.zeros(1), np.zeros(1)
        mod.step_f(x, u, prob.p, out)
        mod.state_value(x, prob.p, prob.w, q)
        mod.control_value(u, prob.p, prob.w, r)
        np.testing.assert_allclose(out, bt.step(x, u), rtol=1e-13, atol=1e-13)
        assert q[0] + r[0] == pytest.approx(float(bt.stage_cost(x, u)), rel=1e-12, abs=1e-12)
        assert r[0] == pytest.approx(bt.W_ACCEL * u[bt.ACC] ** 2 + bt.W_STEER * u[bt.STEER] ** 2, rel=1e-12)
        J, H = np.zeros((4, 6)), np.zeros((6, 6))
        lam = rng.normal(size=4)
        mod.step_jac(x, u, prob.p, J)
        mod.step_hess(x, u, lam, prob.p, H)
        w0 = np.concatenate([x, u])
        eps = 1e-6
        J_fd = np.stack([(bt.step(w0[:4] + eps * e[:4], w0[4:] + eps * e[4:]) - bt.step(w0[:4] - eps * e[:4], w0[4:] - eps * e[4:])) / (2 * eps)
                         for e in np.eye(6)], axis=1)
        np.testing.assert_allclose(J, J_fd, rtol=1e-6, atol=1e-8)

        def jac(wv):
            out = np.zeros((4, 6))
            mod.step_jac(wv[:4], wv[4:], prob.p, out)
            return lam @ out

        H_fd = np.stack([(jac(w0 + eps * e) - jac(w0 - eps * e)) / (2 * eps) for e in np.eye(6)], axis=1)
        np.testing.assert_allclose(H, H_fd, rtol=1e-5, atol=1e-6)
        gq, Hq = np.zeros(4), np.zeros((4, 4))
        mod.state_derivs(x, prob.p, prob.w, gq, Hq)

        def qv(xv):
            o = np.zeros(1)
            mod.state_value(xv, prob.p, prob.w, o)
            return o[0]

        g_fd = np.array([(qv(x + eps * e) - qv(x - eps * e)) / (2 * eps) for e in np.eye(4)])
        np.testing.assert_allclose(gq, g_fd, rtol=1e-5, atol=1e-6)
