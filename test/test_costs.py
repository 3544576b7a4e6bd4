"""Racing cost: the O(1) track table against Track.project, the torch reference against closed
forms, and the kernel cost against the torch reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_control import MbrlError
from mbrl_control.config import dataclass_from_dict
from mbrl_control.kernels.mppi_generated import context_data, cost_data, mppi_kernels
from mbrl_control.models.layout import STATE_DIM, S, U
from mbrl_control.models.single_track import DynamicSingleTrackModel
from mbrl_control.problem.costs.racing import RacingCost, RacingCostConfig
from mbrl_control.problem.definition import ControlProblem, CostSpec, TrackContext
from mbrl_control.problem.torch_cost import TorchProblemCost
from mbrl_control.problem.track_context import TrackTable
from mbrl_control.track import resolve_track


@pytest.fixture(scope="module")
def spielberg():
    track = resolve_track("Spielberg")
    return track, TrackTable(track, cell_m=0.2)


def _racing(table, cfg, dt):
    """The racing problem of the car on ``table`` (what the torch and kernel costs evaluate)."""
    return ControlProblem(DynamicSingleTrackModel, (CostSpec(RacingCost, cfg.vector(dt)),), TrackContext(table), dt)


def _torch_cost(table, cfg, dt):
    """The torch reference: the racing problem's cost evaluated from its definitions."""
    return TorchProblemCost(_racing(table, cfg, dt))


def _points_on_track(track, n, spread, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.uniform(0, track.length_m, n)
    return track.centerline.point_at(s) + rng.uniform(-spread, spread, (n, 2))


def test_table_lookup_agrees_with_track_projection(spielberg):
    track, table = spielberg
    pts = _points_on_track(track, 40_000, 1.1)
    progress, lateral, wl, wr = table.lookup(pts)
    ref = track.project(pts)
    inside = np.abs(ref.lateral_m) < 1.1
    excess = np.abs(lateral) - np.abs(ref.lateral_m)
    # a candidate segment's distance is never below the true nearest distance ...
    assert excess.min() > -1e-5
    # ... and equals it almost everywhere (exceptions: near the evolute of tight corners)
    assert np.percentile(excess[inside], 99.9) < 1e-4
    assert excess[inside].max() < 0.15
    same_side = np.sign(lateral) == np.sign(ref.lateral_m)
    assert np.all(same_side[inside & (np.abs(ref.lateral_m) > 0.05)])
    near = np.abs(ref.lateral_m) < 0.5  # well-conditioned: exact progress
    dp = np.remainder(progress - ref.progress_m + track.length_m / 2, track.length_m) - track.length_m / 2
    assert np.percentile(np.abs(dp[near]), 99.9) < 1e-4 and np.max(np.abs(dp[near])) < 1e-2  # ties at corners
    right, left = track.widths_at(ref.progress_m)
    assert np.max(np.abs(wl[near] - left[near])) < 1e-4 and np.max(np.abs(wr[near] - right[near])) < 1e-4


def test_points_far_outside_the_grid_are_clamped_not_crashing(spielberg):
    track, table = spielberg
    progress, lateral, _, _ = table.lookup(np.array([[1e4, -1e4], [-1e3, 5e3]]))
    assert np.all(np.isfinite(progress)) and np.all(np.abs(lateral) > 100)


def _straight_track_trajectory(track, speed, steps, dt, lateral=0.0):
    """States driving along the first centerline segment direction."""
    x0, y0, yaw = track.start_pose()
    states = np.zeros((1, steps, STATE_DIM))
    d = np.array([np.cos(yaw), np.sin(yaw)])
    n = np.array([-d[1], d[0]])
    for t in range(steps):
        states[0, t, [S.X, S.Y]] = np.array([x0, y0]) + d * speed * dt * (t + 1) + n * lateral
    states[0, :, S.V] = speed
    states[0, :, S.YAW] = yaw
    state0 = np.zeros(STATE_DIM)
    state0[[S.X, S.Y]] = np.array([x0, y0]) + n * lateral
    return torch.tensor(state0), torch.tensor(states)


def test_progress_speed_and_crash_terms_have_their_closed_forms():
    track = resolve_track("default")
    table = TrackTable(track, 0.2)
    dt, steps = 0.02, 5  # stays on the first (straight, 0.3 m) segments
    cfg = RacingCostConfig(speed_max_mps=2.0, speed_weight=3.0, lateral_accel_weight=0.0)
    cost = _torch_cost(table, cfg, dt)
    state0, states = _straight_track_trajectory(track, 2.5, steps, dt)
    controls = torch.zeros(1, steps, 2, dtype=torch.float64)
    total = cost(state0, states, controls, torch.zeros(2))
    expected = -cfg.progress_weight * 2.5 * dt * steps + cfg.speed_weight * 0.5**2 * steps
    assert float(total) == pytest.approx(expected, rel=1e-6)
    # outside the hard bound from the start: crash cost every step, no progress reward
    state0, states = _straight_track_trajectory(track, 2.5, steps, dt, lateral=1.0)
    total = cost(state0, states, controls, torch.zeros(2))
    soft = 1.0 - (1.1 - cfg.soft_margin_m)
    expected = steps * (cfg.crash_cost + cfg.soft_bound_weight * soft**2 + cfg.speed_weight * 0.25)
    assert float(total) == pytest.approx(expected, rel=1e-6)


def test_lateral_term_charges_the_squared_offset_on_either_side():
    track = resolve_track("default")
    dt, steps = 0.02, 4
    cfg = RacingCostConfig(progress_weight=0.0, lateral_accel_weight=0.0, lateral_weight=4.0)
    cost = _torch_cost(TrackTable(track, 0.2), cfg, dt)
    controls = torch.zeros(1, steps, 2, dtype=torch.float64)
    a, d = track.centerline.xy_m[0], track.centerline.segment_dir[0]
    normal = np.array([-d[1], d[0]])  # left of the driving direction: positive lateral
    for offset in (0.3, -0.2):
        state0 = torch.zeros(STATE_DIM, dtype=torch.float64)
        states = torch.zeros(1, steps, STATE_DIM, dtype=torch.float64)
        point = a + 0.1 * d + offset * normal  # standing still beside the first segment
        state0[[S.X, S.Y]] = torch.tensor(point)
        states[0, :, S.X], states[0, :, S.Y] = float(point[0]), float(point[1])
        total = cost(state0, states, controls, torch.zeros(2))
        assert float(total) == pytest.approx(cfg.lateral_weight * offset**2 * steps, rel=1e-5)


def test_control_rate_term_uses_the_previous_command():
    track = resolve_track("default")
    dt = 0.02
    cfg = RacingCostConfig(progress_weight=0.0, steer_rate_weight=0.5, accel_rate_weight=0.01)
    cost = _torch_cost(TrackTable(track, 0.2), cfg, dt)
    state0, states = _straight_track_trajectory(track, 0.0, 3, dt)
    controls = torch.tensor([[[0.1, 1.0], [0.1, 3.0], [0.0, 3.0]]], dtype=torch.float64)
    total = cost(state0, states, controls, torch.tensor([0.0, 0.0]))
    d_steer = np.array([0.1, 0.0, -0.1]) / dt
    d_accel = np.array([1.0, 2.0, 0.0]) / dt
    expected = 0.5 * np.sum(d_steer**2) + 0.01 * np.sum(d_accel**2)
    assert float(total) == pytest.approx(expected, rel=1e-5)


def _kernel_costs(x0, states, controls, u_prev, table, cfg, out):
    """The generated kernels' cost of the trajectories (the racing problem's ``trajectory_costs``)."""
    problem = _racing(table, cfg, 0.02)
    mppi_kernels(problem).cpu.trajectory_costs(x0, states, controls, u_prev, context_data(problem.context),
                                               cost_data(problem), out)


def test_kernel_cost_matches_torch_reference(spielberg):
    track, table = spielberg
    rng = np.random.default_rng(3)
    K, T = 300, 20
    start = _points_on_track(track, 1, 0.3, seed=4)[0]
    steps = rng.normal(0, 0.12, (K, T, 2)).cumsum(axis=1)
    states = np.zeros((K, T, STATE_DIM), dtype=np.float32)
    states[..., S.X] = start[0] + steps[..., 0] * 8
    states[..., S.Y] = start[1] + steps[..., 1] * 8
    states[..., S.V] = rng.uniform(-1, 14, (K, T))
    states[..., S.YAW_RATE] = rng.uniform(-3, 3, (K, T))
    states[..., S.SLIP] = rng.uniform(-0.2, 0.2, (K, T))
    controls = np.stack([rng.uniform(-0.4, 0.4, (K, T)), rng.uniform(-9, 9, (K, T))], axis=-1).astype(np.float32)
    x0 = np.zeros(STATE_DIM, dtype=np.float32)
    x0[[S.X, S.Y]] = start
    u_prev = np.array([0.05, 1.0], dtype=np.float32)
    cfg = RacingCostConfig(steer_rate_weight=0.01, accel_rate_weight=0.001, slip_weight=2.0, lateral_weight=3.0)
    ref = _torch_cost(table, cfg, 0.02)(torch.tensor(x0), torch.tensor(states), torch.tensor(controls),
                                           torch.tensor(u_prev)).numpy()
    out = np.zeros(K, dtype=np.float32)
    _kernel_costs(x0, states, controls, u_prev, table, cfg, out)
    assert np.mean(states[..., S.X] > -1e9) == 1.0
    crashed_some = np.any(ref > cfg.crash_cost)
    assert crashed_some  # the test covers crashed and clean samples
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-3)


def test_cost_config_validation_is_one_clear_error():
    with pytest.raises(MbrlError, match="mppi.cost: unknown parameter 'progres'"):
        dataclass_from_dict(RacingCostConfig, {"progres": 1.0}, "mppi.cost")
    with pytest.raises(MbrlError, match="'crash_cost' must be a finite non-negative"):
        dataclass_from_dict(RacingCostConfig, {"crash_cost": -1.0}, "mppi.cost")
    with pytest.raises(MbrlError, match="hard_margin_m"):
        dataclass_from_dict(RacingCostConfig, {"hard_margin_m": 0.5, "soft_margin_m": 0.3}, "mppi.cost")
    assert U.ACCEL == 1  # the cost's control-rate term reads (steer, accel) in layout order
