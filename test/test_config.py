"""Vehicle parameter loading: the DESIGN.md values, and one clear error per bad field."""

from __future__ import annotations

import math

import pytest
import yaml

from mbrl_control import MbrlError
from mbrl_control.config import dataclass_from_dict, load_vehicle_params, load_yaml
from mbrl_control.control.pure_pursuit import PurePursuitConfig


def test_default_vehicle_matches_design(params):
    assert params.friction_coeff == 1.0489
    assert (params.cornering_stiffness_front, params.cornering_stiffness_rear) == (4.718, 5.4562)
    assert (params.lf_m, params.lr_m, params.cg_height_m) == (0.15875, 0.17145, 0.074)
    assert (params.mass_kg, params.yaw_inertia_kgm2) == (3.74, 0.04712)
    assert (params.steer_min_rad, params.steer_max_rad, params.steer_rate_max_radps) == (-0.4189, 0.4189, 3.2)
    assert (params.accel_max_mps2, params.v_min_mps, params.v_max_mps, params.v_switch_mps) == (9.51, -5.0, 20.0, 7.319)
    assert math.isclose(params.wheelbase_m, 0.3302)


def _write_vehicle(tmp_path, **changes):
    data = yaml.safe_load(open(load_vehicle_params.__globals__["default_vehicle_path"]()))
    for key, value in changes.items():
        if value is None:
            del data["vehicle"][key]
        else:
            data["vehicle"][key] = value
    path = tmp_path / "car.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mass_kg": None}, "missing vehicle parameter 'mass_kg'"),
        ({"friction_coeff": float("nan")}, "'friction_coeff' is not finite"),
        ({"lf_m": -0.1}, "'lf_m' = -0.1 is outside"),
        ({"steer_max_rad": "wide"}, "'steer_max_rad' must be a number"),
        ({"tire_pressure": 2.0}, "unknown vehicle parameter 'tire_pressure'"),
    ],
)
def test_bad_vehicle_file_names_the_field(tmp_path, change, message):
    with pytest.raises(MbrlError, match=message.replace("(", r"\(")):
        load_vehicle_params(_write_vehicle(tmp_path, **change))


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vehicle: [1, 2\n")
    with pytest.raises(MbrlError, match="malformed YAML at line"):
        load_yaml(bad)
    with pytest.raises(MbrlError, match="config file not found"):
        load_vehicle_params(tmp_path / "nope.yaml")


def test_replace_revalidates(params):
    assert params.replace(friction_coeff=0.8).friction_coeff == 0.8
    with pytest.raises(MbrlError, match="friction_coeff"):
        params.replace(friction_coeff=float("inf"))


def test_dataclass_from_dict_validates_types():
    cfg = dataclass_from_dict(PurePursuitConfig, {"set_speed_mps": 3}, "pure_pursuit")
    assert cfg.set_speed_mps == 3.0 and isinstance(cfg.set_speed_mps, float)
    with pytest.raises(MbrlError, match="unknown parameter 'speed'"):
        dataclass_from_dict(PurePursuitConfig, {"speed": 3}, "pure_pursuit")
    with pytest.raises(MbrlError, match="must be a finite number"):
        dataclass_from_dict(PurePursuitConfig, {"set_speed_mps": "fast"}, "pure_pursuit")
