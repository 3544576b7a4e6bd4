"""CasADi/IPOPT NMPC: same optimum as iLQR on bicycle-track; the track controller gives valid commands."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_control.config import load_vehicle_params
from mbrl_control.benchmarks import bicycle_track as bt
from mbrl_control.control.factory import make_controller
from mbrl_control.benchmarks.bicycle_track.gradient import BicycleTrackNMPC, bicycle_track_problem
from mbrl_control.control.nmpc import casadi_model_step
from mbrl_control.kernels import ilqr as kern
from mbrl_control.models.bicycle import DynamicSingleTrack
from mbrl_control.models.layout import S
from mbrl_control.track import Track

PARAMS = load_vehicle_params()


def test_nmpc_and_ilqr_reach_the_same_optimum_on_bicycle_track():
    nmpc = BicycleTrackNMPC(ipopt_options={"ipopt.tol": 1e-10})
    _, U_nmpc = nmpc.nlp.solve(bt.X0)
    ws = kern.make_workspace(4, 2, bt.HORIZON, bt.U_MIN, bt.U_MAX)
    J, _, status = kern.solve(bicycle_track_problem(), bt.X0, ws, kern.solver_options(max_iter=50, tol_cost=1e-12, tol_grad=1e-9))
    assert status == kern.CONVERGED and nmpc.nlp.last_success
    J_nmpc = float(bt.trajectory_cost(bt.X0, U_nmpc))
    assert J == pytest.approx(J_nmpc, rel=1e-7)
    np.testing.assert_allclose(ws.U, U_nmpc, atol=1e-4)


def test_nmpc_closed_loop_quality_on_bicycle_track():
    res = bt.run_closed_loop(BicycleTrackNMPC(), steps=130)
    d = np.abs(np.hypot(res.states[101:, 0], res.states[101:, 1]) - bt.RADIUS_M)
    assert d.max() < 1e-3


def test_casadi_step_equals_torch_model():
    model = DynamicSingleTrack(PARAMS, dt_s=0.02, dtype=torch.float64)
    step = casadi_model_step(model)
    rng = np.random.default_rng(0)
    for v in (0.3, 0.8, 3.0, 9.0):
        x = np.array([1.0, -2.0, rng.uniform(-0.3, 0.3), v, 0.4, rng.normal() * 0.3, rng.normal() * 0.05])
        u = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-9, 9)])
        ref = model(torch.tensor(x), torch.tensor(u)).numpy()
        np.testing.assert_allclose(np.asarray(step(x, u)).ravel(), ref, rtol=1e-12, atol=1e-12)


def test_track_nmpc_commands_are_valid():
    n = 200
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    track = Track("oval", np.stack([22.0 * np.cos(a), 10.0 * np.sin(a)], axis=1), np.full(n, 1.1), np.full(n, 1.1))
    model = DynamicSingleTrack(PARAMS, dt_s=0.02, dtype=torch.float32)
    ctrl = make_controller("nmpc", PARAMS, 0.02, track, model, {"horizon": 15, "ipopt_max_iter": 20})
    from mbrl_control.sim.plant import PlantConfig, SingleTrackPlant, initial_state_at

    plant = SingleTrackPlant(PARAMS, PlantConfig())
    x0, y0, yaw0 = track.start_pose()
    plant.reset(initial_state_at(x0, y0, yaw0, 0.0, PARAMS))
    ctrl.reset(plant.state)
    for _ in range(15):
        u = ctrl.step(plant.state)
        assert np.all(np.isfinite(u))
        assert PARAMS.steer_min_rad <= u[0] <= PARAMS.steer_max_rad and abs(u[1]) <= PARAMS.accel_max_mps2
        plant.advance(u, 0.02)
    assert plant.state[S.V] > 0.3 and ctrl.planned_xy().shape == (16, 2)  # it drives off (0.3 s horizon)
