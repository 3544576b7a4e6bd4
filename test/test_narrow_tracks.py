"""Narrow tracks: any track narrowed (track.narrowed, `sim --half-width-m`), MPPI's recovery from a stop
at the edge, iLQR keeping the track bounds as constraints."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl_control import MbrlError
from mbrl_control.config import load_vehicle_params
from mbrl_control.control.factory import make_controller
from mbrl_control.models.layout import S
from mbrl_control.sim.plant import PlantConfig, SingleTrackPlant, initial_state_at
from mbrl_control.track import Track, load_track, narrowed

REPO = Path(__file__).resolve().parent.parent
PARAMS = load_vehicle_params()
DT = 0.02


# --------------------------------------------------------------------------- narrowing
def test_narrowed_sets_every_half_width_and_keeps_the_centerline(shared_tracks):
    track = load_track(shared_tracks / "Austin_centerline.csv")
    narrow = narrowed(track, 0.8)
    assert narrow.name == "Austin@0.8m"
    np.testing.assert_array_equal(narrow.centerline.xy_m, track.centerline.xy_m)
    assert narrow.length_m == track.length_m
    assert np.all(narrow.width_left_m == 0.8) and np.all(narrow.width_right_m == 0.8)
    assert np.all(track.width_left_m == 1.1)  # the loaded track is not changed
    c = track.centerline
    s = np.linspace(0.0, c.length_m, 50, endpoint=False)
    heading = track.project(c.point_at(s)).heading_rad
    normal = np.stack([-np.sin(heading), np.cos(heading)], axis=1)
    for offset, inside_full, inside_narrow in ((0.6, True, True), (0.95, True, False), (-0.95, True, False)):
        points = c.point_at(s) + offset * normal
        lateral = track.project(points).lateral_m
        straight = np.abs(np.abs(lateral) - abs(offset)) < 0.02  # away from bends, where the offset is exact
        assert straight.sum() > 20
        assert np.all(track.inside(points[straight]) == inside_full)
        assert np.all(narrow.inside(points[straight]) == inside_narrow)
    wider = narrowed(track, 1.5)  # "narrowed" to any half width, wider too
    assert np.all(wider.width_left_m == 1.5) and wider.raceline is not None


@pytest.mark.parametrize("bad", [0.0, -0.8, float("nan"), float("inf"), 101.0, "wide", None])
def test_narrowed_rejects_a_bad_half_width(bad):
    track = Track("square", np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=float), np.ones(4), np.ones(4))
    with pytest.raises(MbrlError, match="track half width"):
        narrowed(track, bad)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbrl_control.apps.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


@pytest.mark.parametrize("value, needle", [("0", "must be positive"), ("-1", "must be positive"),
                                           ("nan", "must be finite"), ("wide", "expected a number")])
def test_sim_rejects_a_bad_half_width_in_one_line(value, needle):
    result = _cli("sim", "--half-width-m", value, "--controller", "pure_pursuit")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--half-width-m" in lines[0] and needle in lines[0], result.stderr


def test_sim_runs_the_narrowed_track(tmp_path):
    result = _cli("sim", "--track", "default", "--half-width-m", "0.9", "--controller", "pure_pursuit",
                  "--laps", "1", "--max-time", "3", "--out", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["track"] == "default@0.9m"


# --------------------------------------------------------------------------- MPPI recovery
def _austin_narrow(shared_tracks) -> Track:
    return narrowed(load_track(shared_tracks / "Austin_centerline.csv", name="Austin"), 0.8)


def _pose(track: Track, s_m: float, lateral_m: float, heading_offset_deg: float, speed_mps: float) -> np.ndarray:
    """A state at arclength ``s_m``, ``lateral_m`` left of the centerline, turned ``heading_offset_deg`` left."""
    xy = track.centerline.point_at(s_m)
    heading = float(track.project(xy[None]).heading_rad[0])
    p = xy + lateral_m * np.array([-math.sin(heading), math.cos(heading)])
    return initial_state_at(p[0], p[1], heading + math.radians(heading_offset_deg), speed_mps, PARAMS)


def _mppi(track: Track, **options):
    from mbrl_control.models.factory import make_model

    return make_controller("mppi", PARAMS, DT, track, make_model("dynamic", PARAMS, DT), {"seed": 0, **options})


def _closed_loop(track: Track, ctrl, state: np.ndarray, steps: int):
    plant = SingleTrackPlant(PARAMS, PlantConfig(seed=0))
    plant.reset(state)
    ctrl.reset(plant.state)
    commands, outside, traveled = [], 0, 0.0
    prev = float(track.project(plant.state[[S.X, S.Y]]).progress_m)
    for _ in range(steps):
        u = ctrl.step(plant.state)
        commands.append(u)
        plant.advance(u, DT)
        progress = float(track.project(plant.state[[S.X, S.Y]]).progress_m)
        traveled += math.remainder(progress - prev, track.length_m)
        prev = progress
        outside += not bool(track.inside(plant.state[[S.X, S.Y]]))
    return plant, np.array(commands), outside, traveled


def test_mppi_finds_a_way_when_every_sample_leaves_the_track(shared_tracks):
    """Stopped 0.15 m from the edge of the narrowed track (inside the crash margin: every sample has
    crashed from its first step), turned 60 degrees towards the edge: without recovery MPPI crept
    backwards and stood there (measured: -0.2 m in 7 s); it must back up and race on."""
    track = _austin_narrow(shared_tracks)
    ctrl = _mppi(track)
    start = _pose(track, 300.0, 0.65, 60.0, 0.0)
    u0 = ctrl.step(start)
    assert np.all(np.isfinite(u0))
    assert PARAMS.steer_min_rad <= u0[0] <= PARAMS.steer_max_rad and abs(u0[1]) <= PARAMS.accel_max_mps2
    assert ctrl.recovering and ctrl.recoveries == 1
    plant, commands, outside, traveled = _closed_loop(track, ctrl, start, 350)
    assert np.all(np.isfinite(commands))
    assert np.all(np.abs(commands[:, 1]) <= PARAMS.accel_max_mps2)
    assert outside == 0
    assert traveled > 8.0 and plant.state[S.V] > 2.0  # racing again, not stopped for good
    assert not ctrl.recovering
    assert ctrl.U.shape == (ctrl.config.horizon, 2) and np.all(np.isfinite(ctrl.U))


def test_mppi_without_recovery_stays_stopped_there(shared_tracks):
    """The same start with ``recovery: false``: the case the recovery exists for (the test above
    would pass vacuously if this car drove off by itself)."""
    track = _austin_narrow(shared_tracks)
    _, _, _, traveled = _closed_loop(track, _mppi(track, recovery=False), _pose(track, 300.0, 0.65, 60.0, 0.0), 350)
    assert traveled < 2.0


def test_mppi_recovery_candidates_and_racing_weights_restored(shared_tracks):
    from mbrl_control.control.mppi import recovery_sequences

    seqs = recovery_sequences(75, DT, 3.0, PARAMS.steer_max_rad, PARAMS.accel_max_mps2, 0.4)
    assert seqs.shape == (15, 75, 2) and seqs.dtype == np.float32
    assert np.all(np.abs(seqs[..., 0]) <= PARAMS.steer_max_rad + 1e-6)
    assert np.all(np.abs(seqs[..., 1]) <= PARAMS.accel_max_mps2 + 1e-6)
    assert np.all(seqs[:, 0, 1] < 0)  # at 3 m/s each starts by slowing down
    assert np.any(np.all(seqs[..., 1] >= 0, axis=1) == False)  # noqa: E712  some back up
    track = _austin_narrow(shared_tracks)
    ctrl = _mppi(track, samples=256, horizon=40)
    racing = ctrl.solver.problem.costs[0].weights.copy()
    ctrl.step(_pose(track, 300.0, 0.7, 70.0, 0.0))
    assert ctrl.recovering
    assert not np.array_equal(ctrl.solver.problem.costs[0].weights, racing)
    ctrl.reset(_pose(track, 0.0, 0.0, 0.0, 0.0))
    assert not ctrl.recovering
    np.testing.assert_array_equal(ctrl.solver.problem.costs[0].weights, racing)
    assert ctrl.sampling.sigma[1] == ctrl.config.sigma_accel_mps2


def test_recovery_candidates_cost_the_same_on_the_numba_and_torch_backends(shared_tracks):
    from mbrl_control.control.mppi import recovery_sequences

    track = _austin_narrow(shared_tracks)
    state = _pose(track, 300.0, 0.1, 10.0, 3.0).astype(np.float32)
    seqs = recovery_sequences(30, DT, 3.0, PARAMS.steer_max_rad, PARAMS.accel_max_mps2, 0.4)
    numba = _mppi(track, samples=64, horizon=30).solver.sequence_costs(state, seqs)
    torch_costs = _mppi(track, samples=64, horizon=30, backend="torch").solver.sequence_costs(state, seqs)
    assert np.all(np.isfinite(numba)) and len(set(np.round(numba, 1))) > 5  # distinct candidates, distinct costs
    np.testing.assert_allclose(numba, torch_costs, rtol=2e-3, atol=0.05)


def test_mppi_recovery_options_are_validated():
    from mbrl_control.config import dataclass_from_dict
    from mbrl_control.control.mppi import MPPIConfig

    for key, value in (("recovery_sigma_scale", 0.5), ("recovery_stall_s", -1.0), ("reverse_speed_max_mps", -0.1)):
        with pytest.raises(MbrlError, match=key):
            dataclass_from_dict(MPPIConfig, {key: value}, "mppi")
    with pytest.raises(MbrlError, match="recovery"):
        dataclass_from_dict(MPPIConfig, {"recovery": "yes"}, "mppi")


# --------------------------------------------------------------------------- iLQR keeps the bounds
def _hairpins(half_width_m: float) -> Track:
    """A 20 m straight, 3 m radius hairpin, 20 m straight, hairpin: narrowed to ``half_width_m``."""
    r, straight = 3.0, 20.0
    pts = [(-straight / 2 + straight * t, -r) for t in np.linspace(0, 1, 60, endpoint=False)]
    pts += [(straight / 2 + r * np.cos(a), r * np.sin(a)) for a in np.linspace(-np.pi / 2, np.pi / 2, 40, endpoint=False)]
    pts += [(straight / 2 - straight * t, r) for t in np.linspace(0, 1, 60, endpoint=False)]
    pts += [(-straight / 2 + r * np.cos(a), r * np.sin(a)) for a in np.linspace(np.pi / 2, 3 * np.pi / 2, 40, endpoint=False)]
    xy = np.array(pts)
    return narrowed(Track("hairpins", xy, np.full(len(xy), 1.1), np.full(len(xy), 1.1)), half_width_m)


AGGRESSIVE = {"progress_weight": 60.0, "soft_margin_m": 0.1, "hard_margin_m": 0.1, "soft_bound_weight": 100.0}
"""A cost that races for the edges: a soft bound 0.1 m inside them, three times the progress reward."""


def _ilqr_laps(track: Track, steps: int, **options):
    from mbrl_control.models.bicycle import DynamicSingleTrack

    model = DynamicSingleTrack(PARAMS, dt_s=DT, dtype=torch.float32)
    ctrl = make_controller("ilqr", PARAMS, DT, track, model, {"horizon": 40, **options})
    x, y, yaw = track.start_pose()
    plant, _, outside, traveled = _closed_loop(track, ctrl, initial_state_at(x, y, yaw, 0.0, PARAMS), steps)
    lateral = track.project(plant.state[[S.X, S.Y]]).lateral_m
    return ctrl, outside, traveled, float(lateral)


def test_ilqr_keeps_every_step_inside_a_narrowed_track():
    """12 s on 0.5 m half width hairpins with the aggressive cost: with the track bounds as constraints
    (the default hard-bound term) every control step is inside; the soft bound alone left them
    (measured: 20 of 600 steps outside)."""
    track = _hairpins(0.5)
    ctrl, outside, traveled, _ = _ilqr_laps(track, 600, cost=AGGRESSIVE)
    assert ctrl.failures == 0
    assert outside == 0
    assert traveled > 80.0  # still racing (~100 m in 12 s)
    _, outside_soft, traveled_soft, _ = _ilqr_laps(track, 600, cost=AGGRESSIVE, hard_bound_weight=0.0)
    assert outside_soft > 0  # what the constraint term is for: the soft bound alone leaves the track here
    assert traveled > 0.95 * traveled_soft  # and keeping inside costs (almost) no progress


# --------------------------------------------------------------------------- controller_node
@pytest.mark.parametrize("half_width, name, width", [(0.7, "default@0.7m", 0.7), (0.0, "default", 1.1)])
def test_controller_node_runs_its_track_narrowed(half_width, name, width):
    from rclpy.parameter import Parameter
    from test_ros_support import ros_context

    from mbrl_control.ros.controller_node import ControllerNode

    with ros_context() as context:
        node = ControllerNode(context=context, parameter_overrides=[
            Parameter(k, value=v) for k, v in {"controller": "pure_pursuit", "track": "default", "warmup_steps": 0,
                                               "track_half_width_m": half_width}.items()])
        try:
            assert node.track.name == name
            assert np.all(node.track.width_left_m == width) and np.all(node.track.width_right_m == width)
        finally:
            node.destroy_node()


def test_ilqr_ddp_solve_that_diverges_is_solved_again_without_second_order_terms(monkeypatch):
    """DDP's costate-weighted dynamics Hessians can make Quu indefinite beyond any regularisation when
    the warm start runs deep into the steep bound term (seen on Austin: the car then left the track on
    the shifted plans); such a solve is repeated as Gauss-Newton iLQR instead of falling back."""
    from mbrl_control.models.bicycle import DynamicSingleTrack

    track = _hairpins(0.8)
    ctrl = make_controller("ilqr", PARAMS, DT, track, DynamicSingleTrack(PARAMS, dt_s=DT, dtype=torch.float32),
                           {"horizon": 40, "ddp": True})
    solve, calls = ctrl.kern.solve, []

    def diverging_ddp(prob, x, ws, opts):
        calls.append(bool(opts.ddp))
        if opts.ddp:
            ws.U[:] = np.nan  # what a diverged solve may leave behind
            return np.inf, 0, ctrl.kern.DIVERGED
        return solve(prob, x, ws, opts)

    monkeypatch.setattr(ctrl.kern, "solve", diverging_ddp)
    x, y, yaw = track.start_pose()
    state = initial_state_at(x, y, yaw, 3.0, PARAMS)
    ctrl.reset(state)
    for _ in range(3):
        u = ctrl.step(state)
        assert np.all(np.isfinite(u))
    assert calls == [True, False] * 3
    assert ctrl.failures == 0 and ctrl.ddp_retries == 3
    assert ctrl.last_status != ctrl.kern.DIVERGED and u[1] > 0.0  # a solved plan (it speeds up), not a fallback
