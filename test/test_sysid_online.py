"""Online refit: rolling buffer, deterministic hand-over, the validation gate (acceptance 3), worker process."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from mbrl_control import MbrlError
from mbrl_control.config import load_vehicle_params
from mbrl_control.models.bicycle import KinematicBicycle
from mbrl_control.models.semiparametric import SemiParametricModel, physics_only
from mbrl_control.sysid.dataset import from_samples
from mbrl_control.sysid.online import OnlineSysid, RollingBuffer, make_online_updater
from mbrl_control.sysid.synthetic import excitation_drive

DT = 0.02
FAST_FIT = {"identify": {"physics": "dynamic", "max_windows": 120, "window_stride": 4},
            "residual": {"steps": 60, "multistep_steps": 0, "members": 2, "hidden": [8]}}


@pytest.fixture(scope="module")
def stream():
    perturbed = load_vehicle_params("models/f1tenth_perturbed.yaml")
    return excitation_drive(perturbed, 16.0, DT, seed=2)


@pytest.fixture()
def holdout(stream):
    t, s, u = stream
    return from_samples(t[-200:], s[-200:], u[-200:], DT)


def _updater(params, tmp_path, **options) -> OnlineSysid:
    opts = {"worker": "inline", "first_refit_s": 10.0, "refit_period_s": 100.0, "handover_delay_s": 1.0,
            "holdout_s": 3.0, "buffer_s": 30.0, "out_dir": str(tmp_path / "models"), "fit": FAST_FIT, **options}
    return make_online_updater(KinematicBicycle(params, DT, dtype=torch.float32), params, DT, opts)


def test_rolling_buffer_keeps_the_latest_in_order() -> None:
    buf = RollingBuffer(5)
    for k in range(8):
        buf.push(k * 0.1, np.full(7, k), np.full(2, -k))
    t, s, u = buf.snapshot()
    assert len(buf) == 5 and np.allclose(t, [0.3, 0.4, 0.5, 0.6, 0.7]) and s[:, 0].tolist() == [3, 4, 5, 6, 7]
    assert u[:, 1].tolist() == [-3, -4, -5, -6, -7]


def test_refit_is_handed_over_at_the_fixed_delay_and_improves_the_model(params, stream, tmp_path, caplog) -> None:
    t, s, u = stream
    updater = _updater(params, tmp_path)
    initial = updater.current
    swapped_at = []
    with caplog.at_level(logging.INFO, logger="mbrl_control.sysid"):
        for k in range(len(t)):
            updater.observe(t[k], s[k], u[k])
            model = updater.poll_new_model()
            if model is not None:
                swapped_at.append((t[k], model))
    updater.close()
    assert len(swapped_at) == 1
    t_swap, model = swapped_at[0]
    assert t_swap == pytest.approx(10.0 + 1.0, abs=1.5 * DT)  # trigger at 10 s, hand-over 1 s later (sim time)
    assert isinstance(model, SemiParametricModel) and next(model.buffers()).dtype == torch.float32
    entry = updater.history[0]
    assert entry["accepted"] and entry["rmse_candidate_m"] < entry["rmse_current_m"] / 3
    files = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert files == ["current.pt", "model_v001.json", "model_v001.pt"]
    saved = json.loads((tmp_path / "models" / "model_v001.json").read_text())
    assert saved["accepted"] and saved["version"] == 1 and saved["fit_s"] > 0
    assert updater.current is model and initial is not model
    assert any("accepted" in r.getMessage() for r in caplog.records)


def _reject(updater: OnlineSysid, path, holdout, caplog, expected: str) -> None:
    before = updater.current
    with caplog.at_level(logging.WARNING, logger="mbrl_control.sysid"):
        caplog.clear()
        assert updater.consider(path, holdout, {}, version=7) is False
    assert updater.current is before and updater.poll_new_model() is None
    assert updater.history[-1]["accepted"] is False and expected in updater.history[-1]["reason"]
    assert any(expected in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_gate_rejects_corrupt_wrong_shaped_and_nan_models(params, holdout, tmp_path, caplog) -> None:
    """Issue 5, acceptance 3: every bad candidate is rejected with a logged reason; the current model stays."""
    updater = _updater(params, tmp_path)
    good = physics_only(params, DT, members=2, hidden=(8,))
    # corrupt bytes
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04 definitely not a model" * 20)
    _reject(updater, garbage, holdout, caplog, "corrupt or mismatched model file")
    # wrong shapes
    data = good.to_dict()
    data["residual_state"]["weights.1"] = torch.zeros(2, 6, 3, dtype=torch.float64)
    torch.save(data, tmp_path / "shapes.pt")
    _reject(updater, tmp_path / "shapes.pt", holdout, caplog, "size mismatch")
    # loads fine (finite float64 weights) but overflows float32: NaN predictions in validation
    data = good.to_dict()
    data["residual_state"]["out_std"] = torch.full((3,), 1e39, dtype=torch.float64)
    data["residual_state"]["weights.1"] = torch.ones(2, 6, 8, dtype=torch.float64)
    torch.save(data, tmp_path / "nan.pt")
    _reject(updater, tmp_path / "nan.pt", holdout, caplog, "NaN/inf predictions")
    # wrong step
    physics_only(params, 0.05).save(tmp_path / "dt.pt")
    _reject(updater, tmp_path / "dt.pt", holdout, caplog, "differs from the control period")
    updater.close()


def test_gate_accepts_only_a_better_model(params, holdout, tmp_path) -> None:
    perturbed = load_vehicle_params("models/f1tenth_perturbed.yaml")
    updater = _updater(params, tmp_path)
    worse = physics_only(params.replace(steer_time_constant_s=0.5, drag_coeff_per_m=0.3), DT, kind="kinematic")
    worse.save(tmp_path / "worse.pt")
    assert not updater.consider(tmp_path / "worse.pt", holdout, {})
    assert "not better" in updater.history[-1]["reason"]
    better = physics_only(perturbed, DT)
    better.save(tmp_path / "better.pt")
    assert updater.consider(tmp_path / "better.pt", holdout, {})
    swapped = updater.poll_new_model()
    assert isinstance(swapped, SemiParametricModel) and updater.poll_new_model() is None  # handed over once
    # the same model again is not better than itself
    assert not updater.consider(tmp_path / "better.pt", holdout, {})
    updater.close()


def test_process_worker_runs_a_refit(params, stream, tmp_path) -> None:
    """The default worker: a spawned process (imports torch once, niced); the result is handed over on time."""
    t, s, u = stream
    fit = {**FAST_FIT, "residual": {"enabled": False}}
    updater = _updater(params, tmp_path, worker="process", first_refit_s=6.0, holdout_s=2.0, fit=fit)
    got = None
    try:
        for k in range(int(8.0 / DT)):
            updater.observe(t[k], s[k], u[k])
            got = updater.poll_new_model() or got
    finally:
        updater.close()
    assert got is not None and updater.history[0]["accepted"], updater.history


def test_bad_options_are_one_line_errors(params) -> None:
    with pytest.raises(MbrlError, match="sysid: unknown parameter 'bogus'"):
        make_online_updater(KinematicBicycle(params, DT), params, DT, {"bogus": 1})
    with pytest.raises(MbrlError, match="worker must be"):
        make_online_updater(KinematicBicycle(params, DT), params, DT, {"worker": "gpu"})
    with pytest.raises(MbrlError, match="sysid.fit.residual: parameter 'members'"):
        make_online_updater(KinematicBicycle(params, DT), params, DT, {"fit": {"residual": {"members": "five"}}})


def test_refits_back_off_while_they_bring_nothing(params, stream, tmp_path) -> None:
    t, s, u = stream
    fit = {**FAST_FIT, "residual": {"enabled": False}}
    updater = _updater(params, tmp_path, first_refit_s=8.0, refit_period_s=2.0, refit_backoff=2.0, handover_delay_s=0.5,
                       holdout_s=2.0, fit=fit)
    for k in range(len(t)):
        updater.observe(t[k], s[k], u[k])
        updater.poll_new_model()
    updater.close()
    triggers = [round(h["t_trigger_s"], 2) for h in updater.history]
    accepted = [h["accepted"] for h in updater.history]
    assert accepted[0] and not any(accepted[1:]), updater.history  # the first fit is already exact
    assert triggers == [8.0, 10.0, 14.0]  # period 2 s, then 4 s after a useless refit, then 8 s (past the end)
