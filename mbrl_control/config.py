"""Configuration loading, validated once at load: vehicle parameters and YAML helpers.

Every error names the file and the field, in one line, as an :class:`MbrlError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from mbrl_control import MbrlError, share_dir


class _YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e9`` / ``-2E-3`` as floats (YAML 1.2), not strings."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))

MAX_TEXT_FILE_BYTES = 64 << 20
"""Largest YAML / track file read (a bigger one is refused, not read into memory)."""


def read_text_file(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of a file; a directory, an oversized or binary file is a one-line MbrlError."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_FILE_BYTES:
            raise MbrlError(f"{path}: {what} is too large ({size} bytes, at most {MAX_TEXT_FILE_BYTES})")
        data = path.read_bytes()
    except OSError as exc:
        raise MbrlError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if b"\0" in data:
        raise MbrlError(f"{path}: {what} is binary, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MbrlError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; missing file, syntax error or non-mapping content is an MbrlError."""
    path = Path(path)
    if not path.is_file():
        raise MbrlError(f"config file not found: {path}")
    text = read_text_file(path, "YAML file")
    try:
        data = yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line
        raise MbrlError(f"{path}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise MbrlError(f"{path}: malformed YAML: nested too deeply") from None
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
    "steer_min_rad": (-1.2, -0.01),  # a car must be able to steer both ways
    "steer_max_rad": (0.01, 1.2),
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
    if not isinstance(raw, Mapping):
        raise MbrlError(f"{source}: expected a mapping of vehicle parameters, got {type(raw).__name__}")
    names = [f.name for f in fields(VehicleParams)]
    unknown = sorted(str(k) for k in set(raw) - set(names))
    if unknown:
        raise MbrlError(f"{source}: unknown vehicle parameter '{unknown[0]}'")
    values: dict[str, float] = {}
    for name in names:
        if name not in raw:
            raise MbrlError(f"{source}: missing vehicle parameter '{name}'")
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MbrlError(f"{source}: vehicle parameter '{name}' must be a number, got {value!r}")
        if not _finite(value):
            raise MbrlError(f"{source}: vehicle parameter '{name}' is not finite ({value})")
        value = float(value)
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
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise MbrlError(f"{section}: expected a mapping of parameters, got {type(options).__name__} {options!r}")
    options = dict(options)
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
        try:
            validate()
        except (TypeError, ValueError, OverflowError) as exc:
            raise MbrlError(f"{section}: invalid value ({exc})") from None
    return obj


def _coerce(section: str, key: str, default: Any, value: Any) -> Any:
    """Check ``value`` against the type of the field's default (bool, int, float, str, list)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise MbrlError(f"{section}: parameter '{key}' must be true/false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
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
        if default and all(isinstance(d, (int, float)) and not isinstance(d, bool) for d in default):
            integer = all(isinstance(d, int) for d in default)
            for item in value:
                if isinstance(item, bool) or not isinstance(item, (int, float)) or not _finite(item) \
                        or (integer and float(item) != int(item)):
                    kind = "integers" if integer else "finite numbers"
                    raise MbrlError(f"{section}: parameter '{key}' must be a list of {kind}, got {value!r}")
            value = [int(v) if integer else float(v) for v in value]
        elif default and all(isinstance(d, str) for d in default):
            if not all(isinstance(v, str) for v in value):
                raise MbrlError(f"{section}: parameter '{key}' must be a list of strings, got {value!r}")
        return type(default)(value)
    return value


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond the float range
        return False


# --------------------------------------------------------------------------- one validation layer
# CLI flags, YAML values and track files go through these checks: finite, ranged, typed, one line.

def check_number(where: str, value: Any, low: float | None = None, high: float | None = None,
                 integer: bool = False, positive: bool = False) -> float | int:
    """``value`` as a finite (integer) number within ``[low, high]`` (``> 0`` if ``positive``), else an MbrlError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MbrlError(f"{where} must be a number, got {value!r}")
    if not _finite(value):
        raise MbrlError(f"{where} must be finite, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise MbrlError(f"{where} must be an integer, got {value!r}")
        value = int(value)
    if positive and not value > 0:
        raise MbrlError(f"{where} must be positive, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else _fmt(low)
        hi = "inf" if high is None else _fmt(high)
        raise MbrlError(f"{where} must be in [{lo}, {hi}], got {value!r}")
    return value


def _fmt(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def cli_number(low: float | None = None, high: float | None = None, integer: bool = False, positive: bool = False):
    """An argparse ``type=`` for a finite, ranged number: ``--rate nan``, ``--seed -1`` are usage errors (exit 2)."""
    import argparse

    def parse(text: str) -> float | int:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if integer else 'a number'}, got {text!r}") from None
        try:
            return check_number("value", value, low, high, integer, positive)
        except MbrlError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "integer" if integer else "number"
    return parse


def available_memory_bytes() -> int:
    """Memory the process may still allocate: MemAvailable (Linux), else physical pages, capped by RLIMIT_AS."""
    available = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if not available:
        try:
            import os

            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 8 << 30
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            available = min(available, soft)
    except (ImportError, ValueError, OSError):
        pass
    return int(available)


def check_memory(where: str, estimate_bytes: float, fraction: float = 0.5) -> None:
    """Refuse an allocation estimated above ``fraction`` of the available memory, before making it."""
    budget = fraction * available_memory_bytes()
    if estimate_bytes > budget:
        raise MbrlError(f"{where} would need about {estimate_bytes / 2**30:.3g} GiB of memory, "
                        f"more than the {budget / 2**30:.3g} GiB allowed (half of what is available); reduce it")


# --------------------------------------------------------------------------- files written atomically

def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``:
    a reader sees the old file or the whole new one, never a part. OSError propagates (the caller
    reports it); the temporary file is removed on failure."""
    import os
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    import json

    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def ensure_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (and parents) and prove a file can be created in it, before any work is done;
    else a one-line MbrlError."""
    import os
    import tempfile

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise MbrlError(f"cannot write the {what} {path}: {exc.strerror or exc}") from None
    return path


@contextlib.contextmanager
def run_folder(path: str | Path, what: str = "run folder"):
    """:func:`ensure_writable_dir`, and the folder removed again if the command fails before anything
    was written in it (bad input leaves no empty run folder behind); a folder that existed stays."""
    path = Path(path)
    existed = path.exists()
    ensure_writable_dir(path, what)
    try:
        yield path
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                path.rmdir()  # only succeeds when empty
        raise


def describe_os_error(exc: OSError) -> str:
    """``"<path>: <reason>"`` of an OSError, for a one-line message."""
    import os

    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    return f"{exc.filename}: {reason}" if exc.filename else reason
