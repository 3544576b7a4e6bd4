"""The ilqr controller on a small track: valid commands, fallbacks with warnings, feedback between replans."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from mbrl_control import MbrlError
from mbrl_control.config import load_vehicle_params
from mbrl_control.control.factory import make_controller
from mbrl_control.control.ilqr import ILQRConfig, ILQRController
from mbrl_control.models.bicycle import DynamicSingleTrack
from mbrl_control.models.derivatives import PARAM_NAMES
from mbrl_control.models.layout import S
from mbrl_control.sim.plant import PlantConfig, SingleTrackPlant, initial_state_at
from mbrl_control.track import Track

PARAMS = load_vehicle_params()
DT = 0.02
HORIZON = 40


def _oval(n: int = 240) -> Track:
    """A 60 m x 30 m stadium, 2.2 m wide."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    xy = np.stack([22.0 * np.cos(a), 10.0 * np.sin(a)], axis=1)
    return Track("oval", xy, np.full(n, 1.1), np.full(n, 1.1))


TRACK = _oval()


def _controller(**options) -> ILQRController:
    model = DynamicSingleTrack(PARAMS, dt_s=DT, dtype=torch.float32)
    return make_controller("ilqr", PARAMS, DT, TRACK, model, {"horizon": HORIZON, **options})


def _drive(ctrl, steps: int, plant=None):
    if plant is None:
        plant = SingleTrackPlant(PARAMS, PlantConfig())
        x0, y0, yaw0 = TRACK.start_pose()
        plant.reset(initial_state_at(x0, y0, yaw0, 0.0, PARAMS))
        ctrl.reset(plant.state)
    commands = []
    for _ in range(steps):
        u = ctrl.step(plant.state)
        commands.append(u)
        plant.advance(u, DT)
    return plant, np.array(commands)


def test_drives_the_track_with_valid_commands():
    ctrl = _controller()
    plant, commands = _drive(ctrl, 150)
    assert np.all(np.isfinite(commands))
    assert np.all(commands[:, 0] >= PARAMS.steer_min_rad) and np.all(commands[:, 0] <= PARAMS.steer_max_rad)
    assert np.all(np.abs(commands[:, 1]) <= PARAMS.accel_max_mps2)
    assert plant.state[S.V] > 4.0  # it races
    assert bool(TRACK.inside(plant.state[[S.X, S.Y]]))
    assert ctrl.failures == 0
    assert ctrl.planned_xy().shape == (HORIZON + 1, 2)


def test_divergence_falls_back_to_the_shifted_plan_with_a_warning(caplog):
    ctrl = _controller()
    plant, _ = _drive(ctrl, 20)
    _, U_prev, _ = ctrl.plan()
    mass = PARAM_NAMES.index("mass_kg")
    good = ctrl.prob.p[mass]
    ctrl.prob.p[mass] = np.nan  # every rollout is NaN: the solve cannot start
    with caplog.at_level(logging.WARNING, logger="mbrl_control.control.ilqr"):
        u = ctrl.step(plant.state)
    assert np.all(np.isfinite(u))
    np.testing.assert_allclose(u, np.clip(U_prev[1], ctrl.u_lo, ctrl.u_hi))
    assert any("shifted previous plan" in r.getMessage() for r in caplog.records)
    assert ctrl.failures == 1
    ctrl.prob.p[mass] = good
    plant.advance(u, DT)
    _drive(ctrl, 5, plant)
    assert ctrl.failures == 1  # recovers


def test_regularisation_blow_up_and_exceptions_never_reach_the_loop(caplog, monkeypatch):
    ctrl = _controller(mu_max=1e-2)
    plant, _ = _drive(ctrl, 10)
    from mbrl_control.problem.costs.contouring import WEIGHT_FIELDS

    ctrl.prob.w[WEIGHT_FIELDS.index("accel")] = -1e3  # Quu indefinite: mu must grow past mu_max
    with caplog.at_level(logging.WARNING, logger="mbrl_control.control.ilqr"):
        u = ctrl.step(plant.state)
    assert ctrl.last_status == ctrl.kern.DIVERGED
    assert np.all(np.isfinite(u)) and any("diverged" in r.getMessage() for r in caplog.records)

    def boom(*args):
        raise FloatingPointError("injected")

    monkeypatch.setattr(ctrl.kern, "solve", boom)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mbrl_control.control.ilqr"):
        u = ctrl.step(plant.state)
    assert np.all(np.isfinite(u)) and any("injected" in r.getMessage() for r in caplog.records)
    u = ctrl.step(np.full(7, np.nan))  # a non-finite state: a safe command, no exception
    assert np.all(np.isfinite(u))


def test_feedback_gains_between_replans():
    ctrl = _controller(replan_every=3)
    plant, _ = _drive(ctrl, 28)  # solves at steps 0, 3, ..., 27: the next two steps use the gains
    X, U, K = ctrl.plan()
    for t in (1, 2):
        x = plant.state
        u = ctrl.step(x)
        dx = x - X[t]
        expect = np.clip(U[t] + K[t] @ dx, ctrl.u_lo, ctrl.u_hi)
        np.testing.assert_allclose(u, expect, atol=1e-12)
        assert np.abs(K[t]).max() > 0  # real, time-varying gains
        plant.advance(u, DT)
    assert not np.allclose(K[1], K[2])


def test_model_hot_swap_and_bad_options():
    ctrl = _controller()
    plant, _ = _drive(ctrl, 5)
    other = DynamicSingleTrack(PARAMS.replace(friction_coeff=0.8), dt_s=DT)
    ctrl.set_model(other)
    assert ctrl.model is other
    assert ctrl.prob.p[PARAM_NAMES.index("friction_coeff")] == pytest.approx(0.8)
    _drive(ctrl, 5, plant)
    assert ctrl.failures == 0
    ctrl.set_model(DynamicSingleTrack(PARAMS, dt_s=0.05))  # unusable during a run: rejected, no exception
    assert ctrl.model is other
    with pytest.raises(MbrlError, match="unknown parameter"):
        _controller(horizonn=3)
    with pytest.raises(MbrlError, match="replan_every"):
        _controller(replan_every=0)
    with pytest.raises(MbrlError, match="progress_weight"):
        _controller(cost={"progress_weight": -1.0})
    with pytest.raises(MbrlError, match="control period"):
        ILQRController(PARAMS, DT, TRACK, DynamicSingleTrack(PARAMS, dt_s=0.05), ILQRConfig(horizon=HORIZON))


def test_mppi_ilqr_offers_mppi_basins_to_ilqr():
    model = DynamicSingleTrack(PARAMS, dt_s=DT, dtype=torch.float32)
    ctrl = make_controller("mppi_ilqr", PARAMS, DT, TRACK, model,
                           {"ilqr": {"horizon": HORIZON}, "mppi": {"samples": 64, "smoothing_window": 0}})
    plant, commands = _drive(ctrl, 40)
    assert np.all(np.isfinite(commands)) and np.all(np.abs(commands[:, 1]) <= PARAMS.accel_max_mps2)
    assert ctrl.mppi_wins >= 1  # at least the first period starts from MPPI's sequence
    assert plant.state[S.V] > 2.0
    # the polished plan is MPPI's next nominal sequence
    X, U, _ = ctrl.ilqr.plan()
    np.testing.assert_allclose(ctrl.mppi.U[:-1], U[1:], atol=1e-6)
    with pytest.raises(MbrlError, match="unknown parameter"):
        make_controller("mppi_ilqr", PARAMS, DT, TRACK, model, {"horizon": 10})


def test_recovers_the_track_position_after_a_jump():
    ctrl = _controller()
    plant, _ = _drive(ctrl, 20)
    state = plant.state.copy()
    a = np.pi / 2  # teleport a quarter lap on: the local projection warm start is wrong
    state[S.X], state[S.Y], state[S.YAW] = 22.0 * np.cos(a), 10.0 * np.sin(a), np.pi
    plant.reset(state)
    u = ctrl.step(plant.state)
    assert np.all(np.isfinite(u)) and ctrl._reference_ok(plant.state)
    r = ctrl.prob.ref[0]
    assert np.hypot(r[0] - state[S.X], r[1] - state[S.Y]) < 0.5
