"""``mbrl-control fit BAG``: a recorded drive of the perturbed plant in, a better model and its report out."""

from __future__ import annotations

import json

import pytest

from mbrl_control.apps.cli import main
from mbrl_control.config import load_vehicle_params
from mbrl_control.models.factory import make_model
from mbrl_control.models.semiparametric import SemiParametricModel
from mbrl_control.sysid.synthetic import excitation_drive, write_bag

DT = 0.02


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    perturbed = load_vehicle_params("models/f1tenth_perturbed.yaml")
    t, s, u = excitation_drive(perturbed, 20.0, DT, seed=4)
    path = tmp_path_factory.mktemp("fit") / "drive.mcap"
    write_bag(path, t, s, u, DT)
    return path


def test_fit_writes_model_and_report(bag, tmp_path, params, capsys) -> None:
    out = tmp_path / "fitted.pt"
    config = tmp_path / "fit.yaml"
    config.write_text("fit:\n  identify:\n    physics: dynamic\n  residual:\n    steps: 80\n    members: 2\n    multistep_steps: 0\n")
    assert main(["fit", str(bag), "--out", str(out), "--config", str(config), "--quiet"]) == 0
    report = json.loads((tmp_path / "fitted.pt.json").read_text())
    for key in ("rmse_nominal_m", "rmse_fitted_m", "fit_s"):
        assert isinstance(report[key], float) and report[key] > 0, key
    assert report["rmse_fitted_m"] * 3 <= report["rmse_nominal_m"]
    assert report["held_out_s"] == pytest.approx(0.2 * report["duration_s"], abs=0.05)
    assert abs(report["identified"]["steer_time_constant_s"] / 0.12 - 1) < 0.05
    model = make_model(str(out), params, DT)
    assert isinstance(model, SemiParametricModel) and model.metrics["rmse_fitted_m"] == pytest.approx(report["rmse_fitted_m"])
    assert "fitted model:" in capsys.readouterr().out


def test_fit_errors_are_one_line(tmp_path, capsys) -> None:
    assert main(["fit", str(tmp_path / "missing.mcap")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mbrl-control: error:") and "\n" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("fit:\n  identify:\n    params: [mass_kg]\n")
    assert main(["fit", str(tmp_path / "missing.mcap"), "--config", str(bad)]) == 2
    assert "cannot identify 'mass_kg'" in capsys.readouterr().err
