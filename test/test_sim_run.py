"""The offline closed loop end to end: pure pursuit on a real track, the run folder, the MCAP telemetry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from mbrl_control.bag import read_drive, typestore

REPO = Path(__file__).resolve().parent.parent
SUMMARY_FIELDS = {
    "track", "plant", "controller", "model", "laps_completed", "lap_times_s", "reference_lap_time_s", "track_violations",
    "collisions_or_stops", "lateral_error_m", "speed_mps", "step_latency_ms", "deadline_misses", "control_rate_hz",
    "model_rmse", "seed",
}


@pytest.fixture(scope="module")
def spielberg_run(tmp_path_factory, shared_tracks):
    out = tmp_path_factory.mktemp("run")
    cmd = [sys.executable, "-m", "mbrl_control.apps.cli", "sim", "--track", str(shared_tracks / "Spielberg_centerline.csv"),
           "--plant", "dynamic", "--controller", "pure_pursuit", "--laps", "1", "--seed", "1", "--out", str(out), "--quiet"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    return out


def test_pure_pursuit_completes_spielberg_inside_bounds(spielberg_run):
    summary = json.loads((spielberg_run / "summary.json").read_text())
    assert SUMMARY_FIELDS <= set(summary)
    assert summary["laps_completed"] == 1 and len(summary["lap_times_s"]) == 1
    assert summary["track_violations"] == 0 and summary["collisions_or_stops"] is False
    assert summary["track"] == "Spielberg" and summary["controller"] == "pure_pursuit" and summary["seed"] == 1
    assert abs(summary["reference_lap_time_s"] - 45.05) < 0.1
    assert 30.0 < summary["lap_times_s"][0] < 90.0
    for key in ("p50", "p99", "max"):
        assert summary["step_latency_ms"][key] > 0
    assert set(summary["model_rmse"]) == {"initial", "final"}
    assert (spielberg_run / "plot.png").stat().st_size > 10_000


def test_telemetry_mcap_decodes_every_message(spielberg_run):
    path = spielberg_run / "telemetry.mcap"
    counts: dict[str, int] = {}
    with AnyReader([path], default_typestore=typestore()) as reader:
        for conn, _t, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            assert msg.header.stamp.sec >= 0
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
        types = {c.topic: c.msgtype for c in reader.connections}
    assert types["/odom"] == "nav_msgs/msg/Odometry"
    assert types["/drive"] == "ackermann_msgs/msg/AckermannDriveStamped"
    assert counts["/odom"] == counts["/drive"] > 2000  # 50 Hz for the whole lap
    drive = read_drive(path)
    assert np.all(np.diff(drive.odom_t_s) > 0)
    np.testing.assert_allclose(np.diff(drive.odom_t_s), 0.02, atol=1e-6)


def test_runs_are_deterministic_for_a_seed(tmp_path, shared_tracks):
    from mbrl_control.config import load_vehicle_params
    from mbrl_control.control.factory import make_controller
    from mbrl_control.sim.plant import PlantConfig, SingleTrackPlant
    from mbrl_control.sim.runner import ClosedLoop, RunConfig
    from mbrl_control.track import load_track

    params = load_vehicle_params()
    track = load_track(shared_tracks / "Sochi_centerline.csv")

    def run(seed):
        plant = SingleTrackPlant(params, PlantConfig(seed=seed, position_noise_m=0.02, command_latency_s=0.03))
        loop = ClosedLoop(track, plant, make_controller("pure_pursuit", params, 0.02, track),
                          RunConfig(laps=1, max_time_s=6.0, seed=seed, progress=False))
        return loop.run()[1]

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a.state, b.state)
    np.testing.assert_array_equal(a.control, b.control)
    assert not np.array_equal(a.measured, c.measured)


def test_sim_seed_reaches_the_sampling_controller_and_sysid(tmp_path, monkeypatch):
    """``sim --seed S`` seeds MPPI's noise and the sysid training, unless the YAML sets their seeds."""
    import mbrl_control.sysid.online as online
    from mbrl_control.apps.cli import build_parser
    from mbrl_control.apps import sim as sim_cli

    assert sim_cli.seeded_controller_options("mppi", {}, 7) == {"seed": 7}
    assert sim_cli.seeded_controller_options("mppi", {"seed": 3, "samples": 64}, 7) == {"seed": 3, "samples": 64}
    assert sim_cli.seeded_controller_options("mppi_ilqr", {"ilqr": {}}, 7) == {"ilqr": {}, "mppi": {"seed": 7}}
    assert sim_cli.seeded_controller_options("pure_pursuit", {}, 7) == {}

    seen = {}
    make_controller, make_online_updater = sim_cli.make_controller, online.make_online_updater

    def spy_controller(name, params, dt, track, model, options):
        seen["controller"] = options
        return make_controller("pure_pursuit", params, dt, track)  # cheap stand-in: only the options matter here

    def spy_updater(model, params, dt, options):
        seen["sysid"] = options
        return make_online_updater(model, params, dt, options)

    monkeypatch.setattr(sim_cli, "make_controller", spy_controller)
    monkeypatch.setattr(online, "make_online_updater", spy_updater)
    args = build_parser("sim").parse_args(["sim", "--controller", "mppi", "--online-sysid", "--seed", "5",
                                           "--max-time", "0.2", "--quiet", "--out", str(tmp_path / "run")])
    assert sim_cli.main(args) == 0
    assert seen["controller"]["seed"] == 5 and seen["sysid"]["seed"] == 5


def test_garbage_is_collected_between_control_steps_never_inside_one(shared_tracks):
    """A full collection takes 100+ ms: the loop keeps it out of the timed step (and restores automatic GC)."""
    import gc

    from mbrl_control.config import load_vehicle_params
    from mbrl_control.control.factory import make_controller
    from mbrl_control.sim.plant import PlantConfig, SingleTrackPlant
    from mbrl_control.sim.runner import GC_PERIOD_STEPS, ClosedLoop, RunConfig
    from mbrl_control.track import load_track

    params = load_vehicle_params()
    track = load_track(shared_tracks / "Sochi_centerline.csv")
    base = make_controller("pure_pursuit", params, 0.02, track)
    state = {"inside_step": False}

    class CyclicGarbageController:
        """Pure pursuit that leaves reference cycles behind: automatic GC would run inside its step."""

        model = None
        name = "pure_pursuit"

        def reset(self, measured):
            base.reset(measured)

        def step(self, measured):
            state["inside_step"] = True
            for _ in range(2000):
                a = []
                a.append(a)
            command = base.step(measured)
            state["inside_step"] = False
            return command

    collections = []

    def on_gc(phase, info):
        if phase == "start":
            collections.append(state["inside_step"])

    enabled_before = gc.isenabled()
    gc.callbacks.append(on_gc)
    try:
        loop = ClosedLoop(track, SingleTrackPlant(params, PlantConfig()), CyclicGarbageController(),
                          RunConfig(laps=1, max_time_s=2 * GC_PERIOD_STEPS * 0.02 + 0.1, progress=False))
        loop.run()
    finally:
        gc.callbacks.remove(on_gc)
    assert len(collections) >= 2  # the loop's own collections ran
    assert not any(collections)  # ... and none inside a control step
    assert gc.isenabled() == enabled_before
