"""The real car's learned residual: multi-step training, the model file, the predictor's arithmetic."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mbrl_control import MbrlError
from mbrl_control.apps.cli import main as cli_main
from mbrl_control.apps.real_data import read_recordings
from mbrl_control.models import load_predictor
from mbrl_control.models.commanded_residual import (HISTORY_CONTEXT, HistoryResidualPredictor, history_context,
                                                    new_ensemble)
from mbrl_control.models.commanded_single_track import CommandedSingleTrackModel
from mbrl_control.models.motion_model import numpy_derivative
from mbrl_control.models.predictor import RESIDUAL_FILE_FORMAT, CommandedCarPredictor, rollout_start, vehicle_params
from mbrl_control.sysid.real_fit import RealFitConfig, fit_commanded_car, window_batch
from mbrl_control.sysid.real_residual import PAST_COMMANDS_S, ResidualFitConfig, _score, _windows, fit_residual, split_in_time

ROOT = Path(__file__).resolve().parent.parent
DART_MAP = ROOT / "config" / "telemetry" / "dart.yaml"
DART_VEHICLE = ROOT / "models" / "dart.yaml"
DART = ROOT.parent / "shared" / "realdata" / "dart"
FILES = [DART / "91_free_driving_16_sept_2024__car_1_Datarecording_09_16_2024_10_02_28.csv",
         DART / "circles_27_sept_2024_fast_ramp__car_1_Datarecording_09_27_2024_18_21_09.csv"]
SMALL = ResidualFitConfig(members=2, hidden=(16, 16), horizon_s=0.5, batch_windows=24, steps=30, eval_every=10,
                          patience=3, learning_rate=1e-2, validation_block_s=2.0, select_on_validation=False, seed=3)
needs_realdata = pytest.mark.skipif(not all(f.is_file() for f in FILES), reason="../shared/realdata not present")


@pytest.fixture(scope="module")
def fitted():
    """Physics fitted on 12 s of two recordings, then the residual with a small, fast configuration."""
    tels = read_recordings(FILES, DART_MAP, 12.0)
    physics = fit_commanded_car(tels, vehicle_params(DART_VEHICLE), RealFitConfig(max_iterations=15)).predictor
    model, report = fit_residual(tels, physics, SMALL)
    return tels, physics, model, report


@needs_realdata
def test_residual_lowers_the_multistep_error_it_was_trained_on(fitted) -> None:
    tels, physics, model, report = fitted
    assert model.residual is not None
    train = window_batch([split_in_time(t, SMALL.validation_fraction, SMALL.validation_block_s)[0] for t in tels],
                         SMALL.horizon_s, SMALL.stride_s, SMALL.sample_s)
    w = np.asarray(SMALL.weights)
    before, after = _score(physics, train, w)[0], _score(model, train, w)[0]
    assert after < 0.95 * before
    # the report's held-out numbers are the predictor's own
    val = window_batch([split_in_time(t, SMALL.validation_fraction, SMALL.validation_block_s)[1] for t in tels],
                       SMALL.validation_horizon_s, SMALL.stride_s, SMALL.sample_s)
    assert report.validation_windows == len(val) and report.train_windows == len(train)
    assert report.val_cost_physics == pytest.approx(_score(physics, val, w)[0], rel=1e-9)
    assert report.kept and report.best_step == SMALL.steps
    assert report.val_cost_residual == pytest.approx(_score(model, val, w)[0], rel=1e-9)


@needs_realdata
def test_residual_fit_is_deterministic_for_a_seed(fitted) -> None:
    tels, physics, model, _ = fitted
    again, _ = fit_residual(tels, physics, SMALL)
    for a, b in zip(model.residual.state_dict().values(), again.residual.state_dict().values()):
        assert torch.equal(a, b)


def _independent_prediction(model: CommandedCarPredictor, s0, u, past, dt: float, context=None) -> np.ndarray:
    """Physics derivative (NumPy) plus the ensemble's torch mean (of the features and, for a history
    residual, the windows' ``context`` (N, C)), integrated step by step."""
    p = SimpleNamespace(**model.params)
    start = rollout_start(p, s0, u, past, dt)
    x = np.stack(start.state, axis=-1)                                   # (N, 8) at the centre of mass
    out = np.empty(s0.shape[:1] + (u.shape[1], 6))
    for j in range(u.shape[1]):
        uj = np.stack([start.throttle[:, j], start.steering[:, j]], axis=-1)
        for _ in range(start.substeps):
            feats = torch.as_tensor(np.c_[x[:, 3:8], uj] if context is None else np.c_[x[:, 3:8], uj, context])
            with torch.no_grad():
                accel = model.residual(feats).numpy()                    # ensemble mean (torch form)
            d = numpy_derivative(CommandedSingleTrackModel, x, uj, p)
            d[:, 3:6] += accel
            x = x + start.substep_s * d
        yaw = x[:, 2]
        rx, ry, cy = p.sensor_x_m, p.sensor_y_m, p.sensor_yaw_rad
        vxr, vyr = x[:, 3] - x[:, 5] * ry, x[:, 4] + x[:, 5] * rx
        out[:, j] = np.c_[x[:, 0] + np.cos(yaw) * rx - np.sin(yaw) * ry, x[:, 1] + np.sin(yaw) * rx + np.cos(yaw) * ry,
                          yaw - cy, np.cos(cy) * vxr - np.sin(cy) * vyr, np.sin(cy) * vxr + np.cos(cy) * vyr, x[:, 5]]
    return out


@needs_realdata
def test_model_file_roundtrip_and_independent_prediction(fitted, tmp_path) -> None:
    tels, physics, model, _ = fitted
    path = model.save(tmp_path / "m.pt")
    assert torch.load(path, weights_only=True)["format"] == RESIDUAL_FILE_FORMAT
    back = load_predictor(path)
    b = window_batch(tels, 1.0, 1.0, 0.1)
    s0, u, past = b.s0[:12], b.u[:12], b.past[:12]
    pred = back.predict(s0, u, dt=b.dt, past_commands=past)
    np.testing.assert_array_equal(pred, model.predict(s0, u, dt=b.dt, past_commands=past))
    np.testing.assert_allclose(pred, _independent_prediction(back, s0, u, past, b.dt), rtol=0, atol=1e-9)
    assert np.abs(pred - physics.predict(s0, u, dt=b.dt, past_commands=past)).max() > 1e-4  # the residual acts
    coarse = back.predict(s0, u[:, ::5], dt=5 * b.dt, past_commands=past[:, ::5])          # 20 Hz: any dt
    assert coarse.shape == (12, u.shape[1] // 5, 6) and np.all(np.isfinite(coarse))


def test_residual_file_with_wrong_shapes_is_refused(tmp_path) -> None:
    model = CommandedCarPredictor(vehicle_params(DART_VEHICLE), residual=new_ensemble(2, (8,), 0))
    path = model.save(tmp_path / "m.pt")
    data = torch.load(path, weights_only=True)
    data["residual_state"]["weights.0"] = torch.zeros(2, 8, 5, dtype=torch.float64)
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(MbrlError, match="bad residual"):
        load_predictor(tmp_path / "bad.pt")
    zero = load_predictor(path)                      # a zero residual predicts exactly the physics
    s0 = np.array([[0.0, 0.0, 0.3, 1.2, 0.0, 0.4]])
    u = np.tile([0.3, 0.2], (1, 50, 1))
    np.testing.assert_array_equal(zero.predict(s0, u, dt=0.01), zero.without_residual().predict(s0, u, dt=0.01))


@needs_realdata
def test_cli_fits_several_files_with_a_residual(tmp_path, capsys) -> None:
    out = tmp_path / "m.pt"
    rc = cli_main(["fit", *map(str, FILES), "--columns", str(DART_MAP), "--vehicle", str(DART_VEHICLE), "--first-s", "8",
                   "--residual", "--residual-steps", "10", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    report = json.loads(text[:text.rindex("}") + 1])
    assert report["files"] == [str(f) for f in FILES] and report["residual"]["steps"] <= 10
    model = load_predictor(out)
    res = report["residual"]   # kept only where it lowered the held-out cost of the physics alone
    assert (model.residual is not None) == res["kept"] == (res["val_cost_residual"] < res["val_cost_physics"])


def test_history_context_is_the_past_command_means_and_start_speed() -> None:
    past = np.zeros((2, 100, 2))
    past[:, -30:, 0] = 0.5                               # throttle 0.5 for the last 0.3 s at 100 Hz
    past[1, :, 1] = np.linspace(-1.0, 1.0, 100)
    s0 = np.array([[0.0, 0.0, 0.0, 1.5, 0.1, 0.7], [1.0, 2.0, 3.0, 0.4, 0.0, -0.2]])
    c = history_context(s0, past, 0.01)
    assert c.shape == (2, len(HISTORY_CONTEXT))
    np.testing.assert_allclose(c[:, :2], [[0.15, 0.5], [0.15, 0.5]])
    np.testing.assert_allclose(c[1, 2:4], [0.0, past[1, -30:, 1].mean()], atol=1e-12)
    np.testing.assert_array_equal(c[:, 4:], s0[:, [3, 5]])
    coarse = history_context(s0, past[:, 4::5], 0.05)    # 20 Hz: the spans are in seconds, not rows
    np.testing.assert_allclose(coarse[:, :2], [[0.15, 0.5], [0.15, 0.5]])


@needs_realdata
def test_training_windows_get_the_past_commands_the_predictor_gets(fitted) -> None:
    """0.5 s training windows still carry 1 s of past commands (metric.py's P = H = 1 s), so that the
    history context's 1 s means are the same quantity in training and in prediction."""
    tels = fitted[0]
    batch = _windows(tels, SMALL, SMALL.horizon_s, None, 0)
    assert batch.u.shape[1] == round(SMALL.horizon_s / batch.dt)
    assert batch.past.shape[1] == round(PAST_COMMANDS_S / batch.dt) > batch.u.shape[1]
    starts, _ = tels[0].windows(SMALL.horizon_s, SMALL.stride_s)
    np.testing.assert_array_equal(batch.past[:len(starts)], tels[0].past_commands(starts, batch.past.shape[1]))


@needs_realdata
def test_history_residual_learns_and_predicts_with_its_context(fitted, tmp_path) -> None:
    tels, physics, _, _ = fitted
    config = dataclasses.replace(SMALL, kind="history")
    model, report = fit_residual(tels, physics, config)
    assert isinstance(model, HistoryResidualPredictor) and report.kept
    train = window_batch([split_in_time(t, config.validation_fraction, config.validation_block_s)[0] for t in tels],
                         config.horizon_s, config.stride_s, config.sample_s)
    w = np.asarray(config.weights)
    assert _score(model, train, w)[0] < 0.95 * _score(physics, train, w)[0]
    b = window_batch(tels, 1.0, 1.0, 0.1)
    s0, u, past = b.s0[:8], b.u[:8], b.past[:8]
    pred = model.predict(s0, u, dt=b.dt, past_commands=past)
    np.testing.assert_allclose(pred, _independent_prediction(model, s0, u, past, b.dt, history_context(s0, past, b.dt)),
                               rtol=0, atol=1e-9)
    # one window alone: the same to rounding (a batch of one takes other vectorised paths in the network)
    np.testing.assert_allclose(model.predict(s0[3], u[3], dt=b.dt, past_commands=past[3]), pred[3], rtol=0, atol=1e-12)
    other = past.copy()
    other[:, :, 0] = np.clip(other[:, :, 0] + 0.2, 0.0, 1.0)  # another throttle history: another prediction
    assert np.abs(model.predict(s0, u, dt=b.dt, past_commands=other) - pred).max() > 1e-5
    back = load_predictor(model.save(tmp_path / "m.pt"))   # the model file keeps the kind and the context
    assert isinstance(back, HistoryResidualPredictor)
    np.testing.assert_array_equal(back.predict(s0, u, dt=b.dt, past_commands=past), pred)
    data = torch.load(tmp_path / "m.pt", weights_only=True)
    data["residual_kind"] = "instantaneous"                  # a history network read as an instantaneous one
    torch.save(data, tmp_path / "wrong.pt")
    with pytest.raises(MbrlError, match="bad residual"):
        load_predictor(tmp_path / "wrong.pt")


@needs_realdata
def test_cli_residual_kinds(tmp_path, capsys) -> None:
    """``--residual`` fits the history residual by default, ``--residual-kind instantaneous`` the one without context."""
    for kind, expected in (("history", HistoryResidualPredictor), ("instantaneous", CommandedCarPredictor)):
        out = tmp_path / f"{kind}.pt"
        args = ["fit", *map(str, FILES), "--columns", str(DART_MAP), "--vehicle", str(DART_VEHICLE), "--first-s", "8",
                "--residual", "--residual-steps", "10", "--out", str(out), "--quiet"]
        rc = cli_main(args if kind == "history" else [*args, "--residual-kind", kind])
        text = capsys.readouterr().out
        assert rc == 0
        report = json.loads(text[:text.rindex("}") + 1])
        model = load_predictor(out)
        assert report["residual"]["kind"] == kind
        assert type(model) is (expected if report["residual"]["kept"] else CommandedCarPredictor)
        assert (model.residual is not None) == report["residual"]["kept"]
