"""``mbrl-control replay``: model error along a recorded drive, the controller replayed on its states."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mbrl_control.bag import TelemetryWriter
from mbrl_control.apps.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent
RUN_S = 6.0


def record_run(out: Path, shared_tracks: Path, plant_vehicle: Path | None = None) -> Path:
    """A short pure-pursuit run on Spielberg written as a ``sim`` run folder; returns its telemetry.mcap."""
    from mbrl_control.config import load_vehicle_params
    from mbrl_control.control.factory import make_controller
    from mbrl_control.sim.plant import SingleTrackPlant
    from mbrl_control.sim.runner import ClosedLoop, RunConfig, write_run
    from mbrl_control.track import load_track

    params = load_vehicle_params()
    track = load_track(shared_tracks / "Spielberg_centerline.csv")
    plant = SingleTrackPlant(load_vehicle_params(plant_vehicle) if plant_vehicle else params)
    loop = ClosedLoop(track, plant, make_controller("pure_pursuit", params, 0.02, track),
                      RunConfig(laps=1, max_time_s=RUN_S, progress=False))
    write_run(out, loop)
    return out / "telemetry.mcap"


@pytest.fixture(scope="module")
def nominal_bag(tmp_path_factory, shared_tracks):
    return record_run(tmp_path_factory.mktemp("nominal"), shared_tracks)


@pytest.fixture(scope="module")
def perturbed_bag(tmp_path_factory, shared_tracks):
    return record_run(tmp_path_factory.mktemp("perturbed"), shared_tracks, REPO / "models" / "f1tenth_perturbed.yaml")


def replay(bag: Path, out: Path, *extra: str) -> dict:
    assert cli_main(["replay", str(bag), "--out", str(out), "--quiet", *extra]) == 0
    assert (out / "replay.png").stat().st_size > 10_000
    return json.loads((out / "replay.json").read_text())


def test_replay_on_a_nominal_recording(nominal_bag, tmp_path, capsys):
    report = replay(nominal_bag, tmp_path / "r")
    assert json.loads(capsys.readouterr().out.split("\nreplay folder:")[0]) == report
    assert report["warnings"] == [] and report["cmd_type"] == "ackermann"
    assert abs(report["duration_s"] - (RUN_S - 0.02)) < 0.05
    model = report["model"]
    assert model["spec"] == "dynamic" and model["horizon_s"] == pytest.approx(1.0) and model["windows"] > 50
    assert model["rmse_m"] < 0.01  # the model is the plant: only resampling / servo-estimate error
    assert model["rmse_at_s"]["0.1"] <= model["rmse_at_s"]["0.5"] <= model["rmse_m"] + 1e-12
    ctrl = report["controller"]
    assert ctrl["name"] == "pure_pursuit" and ctrl["track"] == "Spielberg"  # from the run folder's summary.json
    assert ctrl["steps"] == report["grid_steps"]
    # the same controller on the same states sends the same commands (float32 message fields)
    assert ctrl["steer_rmse_rad"] < 1e-5 and ctrl["accel_rmse_mps2"] < 1e-3
    assert ctrl["step_ms"]["p50"] > 0 and ctrl["recorded_period_ms"]["p50"] == pytest.approx(20.0, abs=1e-6)


def test_replay_sees_the_mismatch_of_a_perturbed_plant(nominal_bag, perturbed_bag, tmp_path):
    nominal = replay(nominal_bag, tmp_path / "n", "--reference-model", "kinematic")
    perturbed = replay(perturbed_bag, tmp_path / "p", "--reference-model", "kinematic")
    assert perturbed["model"]["rmse_m"] > 10 * nominal["model"]["rmse_m"]
    assert nominal["reference_model"]["spec"] == "kinematic"
    assert nominal["reference_model"]["rmse_m"] > nominal["model"]["rmse_m"]


def test_replay_with_another_controller_config_differs(nominal_bag, tmp_path):
    config = tmp_path / "pp.yaml"
    config.write_text("controller_node:\n  ros__parameters:\n    pure_pursuit:\n      lookahead_base_m: 2.0\n"
                      "      speed_gain_per_s: 6.0\n")
    report = replay(nominal_bag, tmp_path / "r", "--config", str(config), "--max-time", "4")
    assert report["duration_s"] <= 4.0
    assert report["controller"]["accel_rmse_mps2"] > 0.1


def test_bag_without_commands_replays_the_controller_only(tmp_path, nominal_bag, shared_tracks):
    from mbrl_control.bag import read_drive
    from mbrl_control.models.odometry import odometry_to_state

    drive = read_drive(nominal_bag)
    bag = tmp_path / "odom_only.mcap"
    with TelemetryWriter(bag) as writer:
        for t, row in zip(drive.odom_t_s, drive.odom):
            writer.odometry(float(t), odometry_to_state(*row, steer_rad=0.0))
    no_track = replay(bag, tmp_path / "a")
    assert no_track["model"] is None and "no commands" in no_track["model_note"]
    assert no_track["controller"] is None and "--track" in no_track["controller_note"]
    report = replay(bag, tmp_path / "b", "--track", str(shared_tracks / "Spielberg_centerline.csv"))
    assert report["cmd_type"] == "none" and report["controller"]["steps"] == report["grid_steps"] > 250
    assert "steer_rmse_rad" not in report["controller"]


def test_replay_errors_are_one_line(tmp_path, capsys, nominal_bag):
    assert cli_main(["replay", str(tmp_path / "missing.mcap")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mbrl-control: error: bag not found") and "\n" not in err
    assert cli_main(["replay", str(nominal_bag), "--horizon", "0"]) == 2
    assert cli_main(["replay", str(nominal_bag), "--out", str(tmp_path / "x"), "--model", "nonsense"]) == 2
    assert "unknown model 'nonsense'" in capsys.readouterr().err
