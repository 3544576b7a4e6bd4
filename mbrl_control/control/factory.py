"""Build a controller by name; each controller module is imported only when asked for."""

from __future__ import annotations

import importlib
from typing import Any

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams
from mbrl_control.track import Track

# name -> (module, factory function); factory(params, control_dt_s, track, model, options) -> Controller
CONTROLLERS: dict[str, tuple[str, str]] = {
    "pure_pursuit": ("mbrl_control.control.pure_pursuit", "make_pure_pursuit"),
    "mppi": ("mbrl_control.control.mppi", "make_mppi"),
    "ilqr": ("mbrl_control.control.ilqr", "make_ilqr"),
    "mppi_ilqr": ("mbrl_control.control.ilqr", "make_mppi_ilqr"),
    "nmpc": ("mbrl_control.control.nmpc", "make_nmpc"),
}


def make_controller(name: str, params: VehicleParams, control_dt_s: float, track: Track, model=None,
                    options: dict[str, Any] | None = None):
    """A controller instance; ``options`` are its configuration (e.g. the ``mppi`` section of a YAML)."""
    if name not in CONTROLLERS:
        raise MbrlError(f"unknown controller '{name}' (choose from {', '.join(CONTROLLERS)})")
    module_name, factory = CONTROLLERS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise MbrlError(f"controller '{name}' is not available in this build") from None
        raise
    return getattr(module, factory)(params, control_dt_s, track, model, options or {})
