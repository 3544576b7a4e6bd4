"""Dynamics models against an independent integration of the same equations, autograd, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from mbrl_control.models import DynamicSingleTrack, KinematicBicycle, S, U, kinematic_state

G = 9.81


def reference_rhs(p, x, u):
    """CommonRoad single-track equations (f1tenth_gym order) written out independently, in plain numpy.

    x = [x, y, delta, v, psi, psi_dot, beta], u = [delta_cmd, a_cmd]; smooth servo, accel limits, drag,
    kinematic model at the CoG below the blend band, smoothstep blend inside it.
    """
    delta, v, psi, r, beta = x[2], x[3], x[4], x[5], x[6]
    cmd = min(max(u[0], p.steer_min_rad), p.steer_max_rad)
    sv = p.steer_rate_max_radps * math.tanh((cmd - delta) / (p.steer_time_constant_s * p.steer_rate_max_radps))
    if (delta <= p.steer_min_rad and sv < 0) or (delta >= p.steer_max_rad and sv > 0):
        sv = 0.0
    upper = p.accel_max_mps2 * p.v_switch_mps / v if v > p.v_switch_mps else p.accel_max_mps2
    a = min(max(u[1], -p.accel_max_mps2), upper)
    if (v <= p.v_min_mps and a <= 0) or (v >= p.v_max_mps and a >= 0):
        a = 0.0
    lwb = p.lf_m + p.lr_m
    # kinematic model at the centre of gravity
    b_k = math.atan(math.tan(delta) * p.lr_m / lwb)
    # d/dt atan(tan(delta) lr / lwb); CommonRoad's printed formula squares tan(delta) once too often
    db_k = (p.lr_m * sv) / (lwb * math.cos(delta) ** 2 * (1 + (math.tan(delta) * p.lr_m / lwb) ** 2))
    kin = [
        v * math.cos(psi + b_k), v * math.sin(psi + b_k), v * math.cos(b_k) * math.tan(delta) / lwb,
        (a * math.cos(beta) * math.tan(delta) - v * math.sin(beta) * db_k * math.tan(delta)
         + v * math.cos(beta) * sv / math.cos(delta) ** 2) / lwb,
        db_k,
    ]
    # tire model (speed clamped away from zero; its weight is zero there anyway)
    vd = max(abs(v), p.kinematic_blend_low_mps) * (1 if v >= 0 else -1)
    mu, m, I, h = p.friction_coeff, p.mass_kg, p.yaw_inertia_kgm2, p.cg_height_m
    lf, lr, Cf, Cr = p.lf_m, p.lr_m, p.cornering_stiffness_front, p.cornering_stiffness_rear
    ff, fr = G * lr - a * h, G * lf + a * h
    dr = (-mu * m / (vd * I * lwb) * (lf**2 * Cf * ff + lr**2 * Cr * fr) * r
          + mu * m / (I * lwb) * (lr * Cr * fr - lf * Cf * ff) * beta + mu * m / (I * lwb) * lf * Cf * ff * delta)
    dbeta = ((mu / (vd**2 * lwb) * (Cr * fr * lr - Cf * ff * lf) - 1) * r
             - mu / (vd * lwb) * (Cr * fr + Cf * ff) * beta + mu / (vd * lwb) * Cf * ff * delta)
    dyn = [v * math.cos(psi + beta), v * math.sin(psi + beta), r, dr, dbeta]
    # kinematic when reversing (f1tenth_gym blends on |v|; its linear tires are unstable for v < 0)
    t = min(max((v - p.kinematic_blend_low_mps) / (p.kinematic_blend_high_mps - p.kinematic_blend_low_mps), 0), 1)
    w = t * t * (3 - 2 * t)
    mix = [w * d + (1 - w) * k for d, k in zip(dyn, kin)]
    return np.array([mix[0], mix[1], sv, a - p.drag_coeff_per_m * v * abs(v), mix[2], mix[3], mix[4]])


def random_controls(rng, n, p):
    steer = rng.uniform(-0.35, 0.35, n)
    accel = rng.uniform(-2.5, 2.5, n)
    return np.stack([steer, accel], axis=1)


@pytest.mark.parametrize("seed, v0", [(0, 4.0), (1, 6.5), (2, 1.2)])
def test_dynamic_model_matches_solve_ivp(params, seed, v0):
    """The model's equations, integrated by its RK4 (8 substeps per 20 ms control period), agree with an adaptive
    high-accuracy integration of the independent reference to 1e-6 over 2 s of random controls; at the plant's
    100 Hz setting (2 substeps) RK4's own truncation error stays below 1e-4."""
    p = params.replace(drag_coeff_per_m=0.05)  # exercise the drag term too
    rng = np.random.default_rng(seed)
    dt, n = 0.02, 100
    controls = random_controls(rng, n, p)
    x0 = kinematic_state(0.0, 0.0, 0.3, v0, 0.0, p).numpy()
    x_ref = x0.copy()
    for k in range(n):
        sol = solve_ivp(lambda _t, x: reference_rhs(p, x, controls[k]), (0.0, dt), x_ref, method="DOP853", rtol=1e-12, atol=1e-12)
        x_ref = sol.y[:, -1]
    for substeps, tol in [(8, 1e-6), (2, 1e-4)]:
        model = DynamicSingleTrack(p, dt_s=dt, integrator="rk4", substeps=substeps, dtype=torch.float64)
        x = torch.tensor(x0)
        with torch.no_grad():
            for k in range(n):
                x = model(x, torch.tensor(controls[k]))
        assert np.max(np.abs(x.numpy() - x_ref)) < tol, substeps


def test_derivative_matches_reference_everywhere(params):
    """The continuous-time right-hand side equals the reference at random states (incl. blend band, reverse, limits)."""
    rng = np.random.default_rng(3)
    model = DynamicSingleTrack(params, dtype=torch.float64)
    kin = KinematicBicycle(params, dtype=torch.float64)
    for _ in range(300):
        x = np.array([rng.normal(), rng.normal(), rng.uniform(-0.42, 0.42), rng.uniform(-3, 12), rng.uniform(-4, 4),
                      rng.normal(0, 1.5), rng.normal(0, 0.1)])
        u = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-12, 12)])
        got = model.derivative(torch.tensor(x), torch.tensor(u)).numpy()
        np.testing.assert_allclose(got, reference_rhs(params, x, u), rtol=1e-9, atol=1e-9)
        low = x.copy()
        low[S.V] = rng.uniform(-0.45, 0.45)
        np.testing.assert_allclose(model.derivative(torch.tensor(low), torch.tensor(u)).numpy(),
                                   kin.derivative(torch.tensor(low), torch.tensor(u)).numpy(), rtol=1e-12, atol=1e-12)


def test_gradcheck_float64(params):
    model = DynamicSingleTrack(params, dt_s=0.02, dtype=torch.float64)
    x = kinematic_state(0.5, -0.2, 0.4, 3.0, 0.1, params).clone().requires_grad_(True)
    u = torch.tensor([0.15, 1.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: model(a, b), (x, u))
    kin = KinematicBicycle(params, dt_s=0.02, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: kin(a, b), (x, u))


def test_kinematic_and_dynamic_agree_at_low_speed(params):
    """Below the blend band the models are identical; at 1.5 m/s with gentle steering they stay within 5 cm over 2 s."""
    dyn = DynamicSingleTrack(params, dt_s=0.02, dtype=torch.float64)
    kin = KinematicBicycle(params, dt_s=0.02, dtype=torch.float64)
    for v0, tol in [(0.3, 1e-12), (1.5, 0.05)]:
        xd = xk = kinematic_state(0.0, 0.0, 0.0, v0, 0.0, params)
        with torch.no_grad():
            for k in range(100):
                u = torch.tensor([0.08 * math.sin(0.05 * k), 0.0], dtype=torch.float64)
                xd, xk = dyn(xd, u), kin(xk, u)
        assert torch.linalg.norm(xd[[S.X, S.Y]] - xk[[S.X, S.Y]]) < tol


def test_batched_shapes_and_dtypes(params):
    model = DynamicSingleTrack(params, dt_s=0.02).to(torch.float32)
    x = kinematic_state(0.0, 0.0, 0.0, 3.0, 0.0, params).float().expand(4, 5, 7)
    u = torch.zeros(4, 5, 2)
    u[..., U.ACCEL] = 1.0
    y = model(x, u)
    assert y.shape == (4, 5, 7) and y.dtype == torch.float32
    one = model(x[0, 0], u[0, 0])
    torch.testing.assert_close(y[2, 3], one)
    traj = model.rollout(x[0], torch.zeros(5, 10, 2))
    assert traj.shape == (5, 10, 7)


def test_actuator_limits(params):
    model = DynamicSingleTrack(params, dtype=torch.float64)
    x = kinematic_state(0.0, 0.0, 0.0, 10.0, 0.0, params)
    d = model.derivative(x, torch.tensor([5.0, 100.0], dtype=torch.float64))
    assert d[S.STEER] <= params.steer_rate_max_radps + 1e-12
    assert math.isclose(float(d[S.V]), params.accel_max_mps2 * params.v_switch_mps / 10.0, rel_tol=1e-12)
    at_limit = x.clone()
    at_limit[S.STEER] = params.steer_max_rad
    assert model.derivative(at_limit, torch.tensor([1.0, 0.0], dtype=torch.float64))[S.STEER] == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runs_on_cuda(params):
    model = DynamicSingleTrack(params, dt_s=0.02).to("cuda", torch.float32)
    x = kinematic_state(0.0, 0.0, 0.0, 3.0, 0.0, params).float().cuda()
    assert model(x, torch.zeros(2, device="cuda")).is_cuda
