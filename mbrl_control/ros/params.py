"""Typed, described, validated ROS parameters for the nodes.

Each node lists its parameters as :class:`ParamSpec` rows (name, default, description, range or
choices). :func:`declare_params` declares them with a ``ParameterDescriptor``, reads the values
given in a params file / on the command line, converts integer literals for float parameters
(YAML ``50`` for ``50.0``), and checks types, ranges and choices. Controller and sysid options
are free-form sections (``mppi.samples``, ``sysid.fit.residual.steps``): :func:`declare_sections`
declares whatever the params file holds under the allowed prefixes and returns them as nested
dicts, which the owning config dataclass then validates. Any parameter the node does not know is
an error: a typo in a YAML file never goes unnoticed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from mbrl_control import MbrlError, share_dir
from mbrl_control.control.command_interface import CALIBRATIONS, MAX_DEAD_ZONE, MAX_STEER_GAIN_RAD, MAX_STEER_OFFSET_RAD

ParamValue = bool | int | float | str | list


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: its default fixes the type."""

    name: str
    default: ParamValue
    description: str
    low: float | None = None  # inclusive bounds for numbers
    high: float | None = None
    choices: tuple[str, ...] | None = None
    positive: bool = False  # strictly greater than zero

    def constraints(self) -> str:
        parts = []
        if self.choices:
            parts.append("one of " + ", ".join(self.choices))
        if self.positive:
            parts.append("> 0")
        if self.low is not None or self.high is not None:
            parts.append(f"in [{'-inf' if self.low is None else self.low}, {'inf' if self.high is None else self.high}]")
        return "; ".join(parts)


def _overrides(node: Node) -> dict[str, Parameter]:
    """Values from params files / --ros-args / the constructor (rclpy keeps them on the node)."""
    return dict(getattr(node, "_parameter_overrides", {}))


def _coerce(node_name: str, spec: ParamSpec, value: Any) -> ParamValue:
    """The override converted to the spec's type, or an MbrlError naming node and parameter."""
    where = f"{node_name}: parameter '{spec.name}'"
    default = spec.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise MbrlError(f"{where} must be true/false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MbrlError(f"{where} must be a number, got {value!r}")
        if isinstance(default, int):
            if float(value) != int(value):
                raise MbrlError(f"{where} must be an integer, got {value!r}")
            return int(value)
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise MbrlError(f"{where} must be a string, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            raise MbrlError(f"{where} must be a list, got {value!r}")
        return list(value)
    raise TypeError(f"unsupported parameter type for {spec.name}")


def _check(node_name: str, spec: ParamSpec, value: ParamValue) -> None:
    where = f"{node_name}: parameter '{spec.name}'"
    if spec.choices is not None and value not in spec.choices:
        raise MbrlError(f"{where} = {value!r} is not one of {', '.join(spec.choices)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise MbrlError(f"{where} must be finite, got {value!r}")
        if spec.positive and value <= 0:
            raise MbrlError(f"{where} must be > 0, got {value!r}")
        if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
            raise MbrlError(f"{where} = {value!r} is outside {spec.constraints()}")


def checked_value(node_name: str, spec: ParamSpec, value: Any) -> ParamValue:
    """``value`` converted to the spec's type and checked like at start-up, else an MbrlError with the reason."""
    value = _coerce(node_name, spec, value)
    _check(node_name, spec, value)
    return value


def declare_params(node: Node, specs: Iterable[ParamSpec], read_only: bool = True) -> dict[str, ParamValue]:
    """Declare every spec and return the validated values by name.

    ``read_only``: rclpy refuses every later change. A node that takes changes at run time passes
    False and checks each change itself (``add_on_set_parameters_callback``).
    """
    overrides = _overrides(node)
    values: dict[str, ParamValue] = {}
    for spec in specs:
        value = _coerce(node.get_name(), spec, overrides[spec.name].value) if spec.name in overrides else spec.default
        _check(node.get_name(), spec, value)
        descriptor = ParameterDescriptor(description=spec.description, additional_constraints=spec.constraints(),
                                         read_only=read_only)
        try:
            node.declare_parameter(spec.name, value, descriptor, ignore_override=True)
        except (ParameterException, TypeError, ValueError) as exc:
            raise MbrlError(f"{node.get_name()}: parameter '{spec.name}': {exc}") from None
        values[spec.name] = value
    return values


def declare_sections(node: Node, prefixes: Iterable[str], dynamic: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Declare the given overrides under ``prefix.`` and return them nested: ``{'mppi': {'samples': 256}}``.

    Sections named in ``dynamic`` are declared changeable (and dynamically typed: ``30`` for a
    float option is converted by the node); the others are read-only.
    """
    prefixes = tuple(prefixes)
    dynamic = set(dynamic)
    sections: dict[str, dict[str, Any]] = {p: {} for p in prefixes}
    for name, param in sorted(_overrides(node).items()):
        head, _, rest = name.partition(".")
        if head not in sections or not rest or node.has_parameter(name):
            continue
        descriptor = option_descriptor(head, head not in dynamic)
        try:
            node.declare_parameter(name, param.value, descriptor)
        except (ParameterException, TypeError, ValueError) as exc:
            raise MbrlError(f"{node.get_name()}: parameter '{name}': {exc}") from None
        _nest(sections[head], rest.split("."), _plain(param.value))
    return sections


def option_descriptor(section: str, read_only: bool, note: str = "") -> ParameterDescriptor:
    """Descriptor of a free-form option (``mppi.cost.progress_weight``), validated by its config dataclass."""
    return ParameterDescriptor(description=f"option of '{section}' (validated by its config dataclass){note}",
                               read_only=read_only, dynamic_typing=not read_only)


def flatten_options(controller: Any) -> dict[str, Any]:
    """The effective options of a controller, flat (``{'samples': 128, 'cost.progress_weight': 20.0}``).

    From its ``config`` dataclass; a mapping field (``cost``) is expanded with the dataclass the
    controller derived from it (``cost_config``) when there is one, else with its own keys.
    Options without a parameter type (None, nested lists) are left out.
    """
    config = getattr(controller, "config", None)
    if not is_dataclass(config):
        return {}
    out: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Mapping):
            derived = getattr(controller, f"{f.name}_config", None)
            out.update(_flat(asdict(derived) if is_dataclass(derived) else value, f"{f.name}."))
        else:
            out[f.name] = value
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items() if _parameter_type_ok(v)}


def _flat(mapping: Mapping, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _parameter_type_ok(value: Any) -> bool:
    if isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)) and value:
        kinds = {type(v) for v in value}
        return len(kinds) == 1 and kinds.pop() in (bool, int, float, str)
    return False


def reject_unknown(node: Node) -> None:
    """An MbrlError for the first override this node did not declare (a typo or a wrong node's key)."""
    unknown = sorted(name for name in _overrides(node) if not node.has_parameter(name))
    if unknown:
        raise MbrlError(f"{node.get_name()}: unknown parameter '{unknown[0]}'")


def _plain(value: Any) -> Any:
    """Array parameters arrive as array.array / numpy; options want lists."""
    if isinstance(value, (str, bytes, bool, int, float)) or value is None:
        return value
    try:
        return [v for v in value]
    except TypeError:
        return value


def _nest(target: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise MbrlError(f"option '{'.'.join(keys)}' conflicts with a value at '{key}'")
    target[keys[-1]] = value


def data_file(value: str) -> Path | None:
    """A file parameter: '' is None (the default); a relative path is looked up in the working directory,
    then in the package's share directory (so ``models/f1tenth_perturbed.yaml`` works from anywhere)."""
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    shared = share_dir() / path
    return shared if shared.exists() else path


def model_spec(value: str) -> str:
    """A model parameter: a model name as is, a model file resolved like :func:`data_file`."""
    from mbrl_control.models.factory import MODEL_NAMES

    return value if value in MODEL_NAMES or not value else str(data_file(value))


ACTUATOR_CALIBRATION_PARAMS = (
    ParamSpec("actuator_calibration", "nominal", "the car's steering map and throttle dead zone: 'nominal' (as "
              "the parameters below give them) or 'identify' (online, with the steering dead time, from odometry "
              "and the commands sent)", choices=CALIBRATIONS),
    ParamSpec("steer_gain_left_rad", 0.0, "road-wheel angle above the trim at full left command [rad]; 0: nominal "
              "(steer_max_rad)", low=0.0, high=MAX_STEER_GAIN_RAD),
    ParamSpec("steer_gain_right_rad", 0.0, "road-wheel angle below the trim at full right command [rad]; 0: "
              "nominal", low=0.0, high=MAX_STEER_GAIN_RAD),
    ParamSpec("steer_offset_rad", 0.0, "road-wheel angle at a zero steering command (trim) [rad]",
              low=-MAX_STEER_OFFSET_RAD, high=MAX_STEER_OFFSET_RAD),
    ParamSpec("throttle_dead_zone", 0.0, "the drive's dead zone as a fraction of the full acceleration command",
              low=0.0, high=MAX_DEAD_ZONE - 1e-6),
)
"""The car's steering map, throttle dead zone and whether to identify them: one set of parameters for
controller_node and sysid_node (both apply :mod:`mbrl_control.control.command_interface`'s terms)."""
