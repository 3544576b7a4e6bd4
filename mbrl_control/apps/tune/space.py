"""The search space of ``tune``: dimensions, the built-in spaces, reading and writing nested options."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from mbrl_control import MbrlError

DEFAULT_SPACES: dict[str, dict[str, dict]] = {
    "pure_pursuit": {
        "lookahead_base_m": {"low": 0.3, "high": 2.0},
        "lookahead_gain_s": {"low": 0.05, "high": 0.6},
        "speed_scale": {"low": 0.6, "high": 1.3},
        "lateral_accel_max_mps2": {"low": 3.0, "high": 14.0},
        "speed_gain_per_s": {"low": 1.0, "high": 10.0, "log": True},
    },
    "mppi": {
        "temperature": {"low": 0.05, "high": 20.0, "log": True},
        "sigma_steer_rad": {"low": 0.03, "high": 0.4, "log": True},
        "sigma_accel_mps2": {"low": 0.5, "high": 6.0, "log": True},
        "horizon": {"low": 20, "high": 80, "type": "int"},
        "noise_alpha": {"low": 0.0, "high": 0.9},
        "cost.progress_weight": {"low": 5.0, "high": 80.0, "log": True},
        "cost.soft_bound_weight": {"low": 30.0, "high": 3000.0, "log": True},
        "cost.soft_margin_m": {"low": 0.2, "high": 0.7},
        "cost.speed_max_mps": {"low": 6.0, "high": 16.0},
        "cost.lateral_accel_max_mps2": {"low": 5.0, "high": 12.0},
        "cost.steer_rate_weight": {"low": 0.0, "high": 0.2},
    },
    "ilqr": {
        "horizon": {"low": 30, "high": 120, "type": "int"},
        "cost.progress_weight": {"low": 5.0, "high": 80.0, "log": True},
        "cost.soft_bound_weight": {"low": 30.0, "high": 3000.0, "log": True},
        "cost.soft_margin_m": {"low": 0.2, "high": 0.7},
        "cost.speed_max_mps": {"low": 6.0, "high": 16.0},
        "cost.lateral_accel_max_mps2": {"low": 5.0, "high": 12.0},
    },
}
"""Built-in search spaces; entries whose option the controller does not have are left out."""


@dataclass(frozen=True)
class Dimension:
    """One searched option: a float/int range (``log`` scale optional) or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    kind: str = "float"  # float | int | choice
    choices: tuple = ()

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def widened(self, value: Any) -> "Dimension":
        """The dimension grown to include ``value`` (the default configuration is always a candidate)."""
        if self.kind == "choice":
            return self if value in self.choices else dataclasses.replace(self, choices=self.choices + (value,))
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise MbrlError(f"tune: default of '{self.name}' is {value!r}, not a number")
        if self.log and value <= 0:
            raise MbrlError(f"tune: '{self.name}' is searched on a log scale but its default is {value}")
        return dataclasses.replace(self, low=min(self.low, value), high=max(self.high, value))


_PATH = re.compile(r"^([A-Za-z_]\w*)(?:\[(\d+)\])?$")


def parse_space(raw: dict, source: str) -> list[Dimension]:
    """Dimensions of a space mapping (``name: {low, high, log, type} | {choices}``), checked."""
    if not isinstance(raw, dict) or not raw:
        raise MbrlError(f"{source}: the search space must be a non-empty mapping")
    dims = []
    for name, spec in raw.items():
        where = f"{source}: '{name}'"
        if not all(_PATH.match(part) for part in str(name).split(".")):
            raise MbrlError(f"{where}: not an option name (name, section.name or name[i])")
        if not isinstance(spec, dict):
            raise MbrlError(f"{where}: expected a mapping with low/high or choices")
        unknown = set(spec) - {"low", "high", "log", "type", "choices"}
        if unknown:
            raise MbrlError(f"{where}: unknown key '{sorted(unknown)[0]}'")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise MbrlError(f"{where}: choices must be a non-empty list")
            dims.append(Dimension(str(name), kind="choice", choices=tuple(spec["choices"])))
            continue
        low, high, kind, log = spec.get("low"), spec.get("high"), spec.get("type", "float"), spec.get("log", False)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
        if not numbers or not low < high:
            raise MbrlError(f"{where}: needs finite numbers low < high")
        if kind not in ("float", "int") or not isinstance(log, bool) or (log and low <= 0):
            raise MbrlError(f"{where}: type must be float or int, log true/false (log needs low > 0)")
        if kind == "int" and (low != int(low) or high != int(high)):
            raise MbrlError(f"{where}: an int range needs integer bounds")
        dims.append(Dimension(str(name), float(low), float(high), log, kind))
    return dims


def _steps(name: str) -> list[tuple[str, int | None]]:
    return [(m.group(1), None if m.group(2) is None else int(m.group(2))) for m in map(_PATH.match, name.split("."))]


def get_option(options: dict, name: str) -> Any:
    """The value at ``name`` (``a.b``, ``a[i]``) in nested options; KeyError if absent."""
    node: Any = options
    for key, index in _steps(name):
        node = node[key] if isinstance(node, dict) else getattr(node, key)
        if index is not None:
            node = node[index]
    return node


def set_option(options: dict, name: str, value: Any) -> None:
    """Set ``name`` in nested options (creating mappings; a list element needs its list present)."""
    steps = _steps(name)
    node = options
    for key, index in steps[:-1]:
        node = node.setdefault(key, {}) if index is None else node[key][index]
    key, index = steps[-1]
    if index is None:
        node[key] = value
    else:
        node[key] = list(node[key])
        node[key][index] = value


def default_values(dims: list[Dimension], base: dict, controller) -> dict[str, Any]:
    """Each dimension's value in the default configuration: the base YAML, else the controller's config.

    A nested section the config keeps as a mapping (e.g. ``cost``) takes its defaults from the
    config's ``<section>_config()`` dataclass when the mapping lacks the key.
    """
    config = getattr(controller, "config", None)
    out = {}
    for dim in dims:
        for source in (base, config, _section_configs(config)):
            try:
                out[dim.name] = plain(get_option(source, dim.name))
                break
            except (KeyError, AttributeError, IndexError, TypeError):
                continue
        else:
            raise MbrlError(f"tune: the controller has no option '{dim.name}' (and the base config does not set it)")
    return out


def _section_configs(config) -> dict:
    """``{section: <section>_config()}`` of a config dataclass whose nested sections are plain mappings."""
    if config is None or not dataclasses.is_dataclass(config):
        return {}
    out = {}
    for f in dataclasses.fields(config):
        getter = getattr(config, f"{f.name}_config", None)
        if isinstance(getattr(config, f.name), dict) and callable(getter):
            out[f.name] = getter()
    return out


def plain(value: Any) -> Any:
    """numpy scalars / tuples as plain YAML-able Python values."""
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


def trial_options(base: dict, values: dict[str, Any]) -> dict:
    """The base options with the trial's values written in (base left unchanged)."""
    options = copy.deepcopy(base)
    for name, value in values.items():
        set_option(options, name, plain(value))
    return options
