"""``mbrl-control tune``: search space handling, the objective, the model plant, local and Ray searches."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from mbrl_control import MbrlError
from mbrl_control.apps.cli import main as cli_main
from mbrl_control.apps.tune import (Dimension, EvalSpec, ModelPlant, TuneConfig, default_values, evaluate, get_option,
                                    parse_space, score, set_option, trial_options)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def oval(tmp_path_factory) -> Path:
    """A small closed oval (about 30 m, 2.2 m wide): a pure-pursuit lap takes a few seconds."""
    th = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)
    path = tmp_path_factory.mktemp("track") / "Oval_centerline.csv"
    table = np.c_[6.0 * np.cos(th), 3.5 * np.sin(th), np.full(72, 1.1), np.full(72, 1.1)]
    np.savetxt(path, table, delimiter=",", header="x_m, y_m, w_tr_right_m, w_tr_left_m")
    return path


def test_parse_space_accepts_ranges_and_choices_and_rejects_bad_entries():
    dims = parse_space({"a": {"low": 0.1, "high": 2.0, "log": True}, "cost.w": {"low": 1, "high": 5, "type": "int"},
                        "sigma[1]": {"low": 0.0, "high": 1.0}, "mode": {"choices": ["x", "y"]}}, "s")
    assert [d.kind for d in dims] == ["float", "int", "float", "choice"] and dims[0].log
    for bad, match in [({"a": {"low": 2.0, "high": 1.0}}, "low < high"), ({"a": {"low": 0.0, "high": 1.0, "log": True}}, "log"),
                       ({"a": {"low": 0.0, "high": 1.0, "step": 2}}, "unknown key"), ({"a b": {"low": 0, "high": 1}}, "option name"),
                       ({"a": {"low": 0.5, "high": 3, "type": "int"}}, "integer bounds"), ({}, "non-empty"),
                       ({"a": {"choices": []}}, "choices"), ({"a": [0, 1]}, "mapping")]:
        with pytest.raises(MbrlError, match=match):
            parse_space(bad, "s")


def test_nested_options_are_read_and_written():
    options = {"cost": {"w": 1.0}, "sigma": [0.1, 0.2]}
    set_option(options, "cost.v", 3.0)
    set_option(options, "sigma[1]", 0.5)
    set_option(options, "horizon", 30)
    assert options == {"cost": {"w": 1.0, "v": 3.0}, "sigma": [0.1, 0.5], "horizon": 30}
    assert get_option(options, "sigma[1]") == 0.5 and get_option(options, "cost.v") == 3.0
    base = {"cost": {"w": 1.0}}
    assert trial_options(base, {"cost.w": np.float64(2.0)}) == {"cost": {"w": 2.0}} and base == {"cost": {"w": 1.0}}


@dataclass(frozen=True)
class _CostConfig:
    w: float = 7.0


@dataclass(frozen=True)
class _Config:
    horizon: int = 20
    sigma: tuple = (0.1, 0.2)
    cost: dict = field(default_factory=dict)

    def cost_config(self) -> _CostConfig:
        return _CostConfig(**self.cost)


def test_defaults_come_from_the_base_config_then_the_controller_config():
    controller = SimpleNamespace(config=_Config())
    dims = [Dimension("horizon", 10, 50, kind="int"), Dimension("sigma[1]", 0.01, 1.0), Dimension("cost.w", 1.0, 10.0)]
    assert default_values(dims, {}, controller) == {"horizon": 20, "sigma[1]": 0.2, "cost.w": 7.0}
    assert default_values(dims, {"horizon": 33, "cost": {"w": 2.0}}, controller)["cost.w"] == 2.0
    with pytest.raises(MbrlError, match="no option 'missing'"):
        default_values([Dimension("missing", 0.0, 1.0)], {}, controller)
    assert Dimension("a", 1.0, 2.0).widened(5.0).high == 5.0 and Dimension("m", kind="choice", choices=(1,)).widened(2).choices == (1, 2)


def test_score_ranks_finished_runs_by_lap_time_and_failed_runs_by_distance():
    config = TuneConfig(laps=1, violation_penalty_s=0.5)
    length = 100.0
    log = SimpleNamespace(progress_m=np.r_[np.arange(90.0, 100.0, 1.0), np.arange(0.0, 30.0, 1.0)])  # wraps once: 39 m
    done = score({"lap_times_s": [20.0], "track_violations": 2, "laps_completed": 1, "collisions_or_stops": False},
                 log, length, config, 60.0)
    assert done["state"] == "complete" and done["objective"] == pytest.approx(21.0)
    failed = score({"lap_times_s": [], "track_violations": 0, "laps_completed": 0, "collisions_or_stops": True},
                   log, length, config, 60.0)
    assert failed["state"] == "failed" and failed["fraction"] == pytest.approx(0.39)
    assert failed["objective"] == pytest.approx(60.0 * (2.0 - 0.39)) and failed["objective"] > 60.0


def test_model_plant_matches_the_built_in_plant(params):
    """The dynamic model stepped at 100 Hz as a ModelPlant is the built-in RK4 plant at 100 Hz."""
    import torch

    from mbrl_control.models.bicycle import DynamicSingleTrack
    from mbrl_control.sim.plant import SingleTrackPlant, initial_state_at

    model = DynamicSingleTrack(params, dt_s=0.01, integrator="rk4", dtype=torch.float64)
    a, b = ModelPlant(model, params), SingleTrackPlant(params)
    x0 = initial_state_at(1.0, 2.0, 0.3, 3.0, params)
    a.reset(x0)
    b.reset(x0)
    for k in range(60):
        u = np.array([0.2 * np.sin(0.2 * k), 2.0 * np.cos(0.1 * k)])
        np.testing.assert_allclose(a.advance(u, 0.02), b.advance(u, 0.02), rtol=1e-12, atol=1e-12)
    assert np.hypot(a.state[0] - 1.0, a.state[1] - 2.0) > 2.0  # it drove
    with pytest.raises(MbrlError, match="does not divide"):
        a.advance(np.zeros(2), 0.015)


def read_outputs(out: Path) -> tuple[dict, list, dict]:
    summary = json.loads((out / "tune.json").read_text())
    trials = json.loads((out / "trials.json").read_text())
    tuned = yaml.safe_load((out / "tuned.yaml").read_text())
    assert (out / "search.png").stat().st_size > 10_000
    return summary, trials, tuned


def test_local_search_improves_on_the_default_and_writes_a_usable_config(oval, tmp_path, capsys):
    out = tmp_path / "tune"
    rc = cli_main(["tune", "--track", str(oval), "--controller", "pure_pursuit", "--model", "dynamic", "--trials", "4",
                   "--jobs", "2", "--seed", "3", "--out", str(out), "--validate-track", str(oval),
                   "--validate-plant-vehicle", str(REPO / "models" / "f1tenth_perturbed.yaml")])
    assert rc == 0
    assert "tune" in capsys.readouterr().err  # the progress bar
    summary, trials, tuned = read_outputs(out)
    assert summary["engine"] == "local" and summary["jobs"] == 2 and summary["trials"] == len(trials) == 4
    default = next(t for t in trials if t["number"] == 0)
    assert default["values"] == {"lookahead_base_m": 0.6, "lookahead_gain_s": 0.25, "speed_scale": 0.85,
                                 "lateral_accel_max_mps2": 6.0, "speed_gain_per_s": 3.0}
    assert default["state"] == "complete" and summary["default"]["objective"] == default["objective"]
    assert summary["best"]["objective"] == min(t["objective"] for t in trials) <= default["objective"]
    section = tuned["controller_node"]["ros__parameters"]["pure_pursuit"]
    assert section == pytest.approx(summary["best"]["values"])
    assert {t["number"] for t in trials} == set(range(4))
    # the written config, read back as 'sim --config' reads it, drives the best trial's lap again (deterministic)
    from mbrl_control.config import load_vehicle_params
    from mbrl_control.models.factory import make_model
    from mbrl_control.apps.sim import controller_options
    from mbrl_control.track import load_track

    options, _ = controller_options(out / "tuned.yaml", "pure_pursuit")
    params = load_vehicle_params()
    model = make_model("dynamic", params, 0.02)
    import torch

    spec = EvalSpec(load_track(oval), "pure_pursuit", {}, params, model.to(torch.float64), params, model, TuneConfig())
    again = evaluate(spec, options["pure_pursuit"])
    assert again["objective"] == pytest.approx(summary["best"]["objective"], abs=1e-9)
    validation = summary["validation"]
    assert validation["track"] == "Oval" and validation["default"]["state"] in ("complete", "failed")
    assert set(validation) == {"track", "plant", "default", "tuned", "lap_time_gain_pct", "objective_gain_pct"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """A local Ray head started for this test (1 CPU), stopped by its own process id afterwards."""
    pytest.importorskip("ray")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray_bin = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen([str(ray_bin), "start", "--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard=false",
                             "--disable-usage-stats", "--temp-dir", temp, "--block"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                pytest.fail("ray start exited early")
            time.sleep(0.5)
        else:
            pytest.fail("local Ray head did not come up in 60 s")
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_search_on_a_ray_cluster(oval, tmp_path, ray_cluster, monkeypatch):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    out = tmp_path / "tune_ray"
    rc = cli_main(["tune", "--track", str(oval), "--controller", "pure_pursuit", "--model", "dynamic", "--trials", "2",
                   "--ray", ray_cluster, "--out", str(out), "--quiet"])
    assert rc == 0
    summary, trials, _ = read_outputs(out)
    assert summary["engine"] == "ray" and summary["jobs"] == 1 and len(trials) == 2
    assert all(t["state"] == "complete" for t in trials)


def test_tune_input_errors_are_one_line(oval, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("space:\n  no_such_option: {low: 0.0, high: 1.0}\n")
    common = ["tune", "--track", str(oval), "--controller", "pure_pursuit", "--out", str(tmp_path / "o"), "--quiet"]
    assert cli_main([*common, "--space", str(space)]) == 2
    assert "no option 'no_such_option'" in capsys.readouterr().err
    assert cli_main([*common, "--model", "dynamic", "--plant-vehicle", str(REPO / "models" / "f1tenth.yaml")]) == 2
    assert "one plant" in capsys.readouterr().err
    assert cli_main([*common, "--trials", "0"]) == 2
    assert cli_main(["tune", "--track", str(oval), "--controller", "nope"]) == 2
