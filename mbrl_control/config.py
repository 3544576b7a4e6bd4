"""Configuration loading, validated once at load: vehicle parameters and YAML helpers.

Every error names the file and the field, in one line, as an :class:`MbrlError`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from mbrl_control import MbrlError, share_dir


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; missing file, syntax error or non-mapping content is an MbrlError."""
    path = Path(path)
    if not path.is_file():
        raise MbrlError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise MbrlError(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise MbrlError(f"{path}: expected a YAML mapping at top level, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class VehicleParams:
    """Single-track vehicle parameters (CommonRoad / f1tenth_gym conventions, SI units)."""

    friction_coeff: float
    cornering_stiffness_front: float
    cornering_stiffness_rear: float
    lf_m: float
    lr_m: float
    cg_height_m: float
    mass_kg: float
    yaw_inertia_kgm2: float
    steer_min_rad: float
    steer_max_rad: float
    steer_rate_max_radps: float
    accel_max_mps2: float
    v_min_mps: float
    v_max_mps: float
    v_switch_mps: float
    width_m: float
    length_m: float
    steer_time_constant_s: float
    drag_coeff_per_m: float
    kinematic_blend_low_mps: float
    kinematic_blend_high_mps: float

    @property
    def wheelbase_m(self) -> float:
        return self.lf_m + self.lr_m

    def replace(self, **changes: float) -> "VehicleParams":
        """A copy with some fields changed, validated again."""
        return validate_vehicle_params({**dataclasses.asdict(self), **changes}, source="replace()")

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


# Allowed ranges (inclusive). Anything outside is a configuration error.
_RANGES: dict[str, tuple[float, float]] = {
    "friction_coeff": (0.05, 3.0),
    "cornering_stiffness_front": (0.01, 100.0),
    "cornering_stiffness_rear": (0.01, 100.0),
    "lf_m": (0.01, 5.0),
    "lr_m": (0.01, 5.0),
    "cg_height_m": (0.0, 2.0),
    "mass_kg": (0.1, 5000.0),
    "yaw_inertia_kgm2": (1e-4, 1e4),
    "steer_min_rad": (-1.2, 0.0),
    "steer_max_rad": (0.0, 1.2),
    "steer_rate_max_radps": (0.01, 50.0),
    "accel_max_mps2": (0.01, 50.0),
    "v_min_mps": (-100.0, 0.0),
    "v_max_mps": (0.1, 200.0),
    "v_switch_mps": (0.01, 200.0),
    "width_m": (0.01, 5.0),
    "length_m": (0.01, 10.0),
    "steer_time_constant_s": (1e-3, 2.0),
    "drag_coeff_per_m": (0.0, 5.0),
    "kinematic_blend_low_mps": (0.0, 10.0),
    "kinematic_blend_high_mps": (0.01, 20.0),
}


def validate_vehicle_params(raw: Mapping[str, Any], source: str = "<dict>") -> VehicleParams:
    """Check presence, type, finiteness and range of every field; build VehicleParams."""
    names = [f.name for f in fields(VehicleParams)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise MbrlError(f"{source}: unknown vehicle parameter '{unknown[0]}'")
    values: dict[str, float] = {}
    for name in names:
        if name not in raw:
            raise MbrlError(f"{source}: missing vehicle parameter '{name}'")
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MbrlError(f"{source}: vehicle parameter '{name}' must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise MbrlError(f"{source}: vehicle parameter '{name}' is not finite ({value})")
        lo, hi = _RANGES[name]
        if not lo <= value <= hi:
            raise MbrlError(f"{source}: vehicle parameter '{name}' = {value} is outside [{lo}, {hi}]")
        values[name] = value
    if values["kinematic_blend_high_mps"] <= values["kinematic_blend_low_mps"]:
        raise MbrlError(f"{source}: 'kinematic_blend_high_mps' must exceed 'kinematic_blend_low_mps'")
    return VehicleParams(**values)


DEFAULT_VEHICLE_FILE = "f1tenth.yaml"


def default_vehicle_path() -> Path:
    return share_dir() / "models" / DEFAULT_VEHICLE_FILE


def load_vehicle_params(path: str | Path | None = None) -> VehicleParams:
    """Load and validate a vehicle parameter file (default: ``models/f1tenth.yaml``)."""
    path = Path(path) if path is not None else default_vehicle_path()
    data = load_yaml(path)
    section = data.get("vehicle", data)
    if not isinstance(section, dict):
        raise MbrlError(f"{path}: 'vehicle' must be a mapping")
    return validate_vehicle_params(section, source=str(path))


def dataclass_from_dict(cls, options: Mapping[str, Any] | None, section: str):
    """Instantiate a config dataclass from a mapping, rejecting unknown keys and wrong types in one line."""
    options = dict(options or {})
    known = {f.name: f for f in fields(cls)}
    for key, value in options.items():
        if key not in known:
            raise MbrlError(f"{section}: unknown parameter '{key}' (known: {', '.join(known)})")
        options[key] = _coerce(section, key, getattr(cls, key, None), value)
    try:
        obj = cls(**options)
    except (TypeError, ValueError) as exc:
        raise MbrlError(f"{section}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def _coerce(section: str, key: str, default: Any, value: Any) -> Any:
    """Check ``value`` against the type of the field's default (bool, int, float, str, list)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise MbrlError(f"{section}: parameter '{key}' must be true/false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise MbrlError(f"{section}: parameter '{key}' must be a finite number, got {value!r}")
        if isinstance(default, int):
            if float(value) != int(value):
                raise MbrlError(f"{section}: parameter '{key}' must be an integer, got {value!r}")
            return int(value)
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise MbrlError(f"{section}: parameter '{key}' must be a string, got {value!r}")
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise MbrlError(f"{section}: parameter '{key}' must be a list, got {value!r}")
        return type(default)(value)
    return value
