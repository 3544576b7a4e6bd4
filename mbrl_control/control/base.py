"""The one Controller interface every controller implements, and the command guard.

A controller maps the measured state (layout of :mod:`mbrl_control.models.layout`) to a
control ``u = (steer_cmd_rad, accel_mps2)``. Whatever a controller returns passes through
:func:`guard_command` before it reaches a plant or a topic: never NaN, never out of limits.
"""

from __future__ import annotations

import abc

import numpy as np

from mbrl_control.config import VehicleParams
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S, U

SAFE_STOP_DECEL_MPS2 = 4.0
"""Deceleration of the safe stop (well inside the F1TENTH car's grip)."""


class Controller(abc.ABC):
    """Receding-horizon (or reactive) controller called once per control period."""

    name: str = "controller"

    def __init__(self, params: VehicleParams, control_dt_s: float) -> None:
        self.params = params
        self.control_dt_s = float(control_dt_s)

    def reset(self, state: np.ndarray) -> None:
        """Forget warm starts; called before a run (and after a safe stop)."""

    @abc.abstractmethod
    def step(self, state: np.ndarray) -> np.ndarray:
        """Control (2,) for the measured state (7,). Must not raise on any finite state."""

    def planned_xy(self) -> np.ndarray | None:
        """The (T, 2) predicted positions of the current plan, if the controller plans."""
        return None

    @property
    def model(self):
        """The dynamics model the controller predicts with (``None`` for model-free ones)."""
        return None

    def set_model(self, model) -> None:
        """Hot-swap the prediction model (online system identification)."""
        raise NotImplementedError(f"{self.name} has no prediction model to swap")


def safe_stop_command(state: np.ndarray, params: VehicleParams, control_dt_s: float) -> np.ndarray:
    """Straight wheels, brake to standstill without overshooting into reverse."""
    v = float(state[S.V]) if state is not None and np.isfinite(state[S.V]) else 0.0
    accel = -np.sign(v) * min(SAFE_STOP_DECEL_MPS2, params.accel_max_mps2, abs(v) / control_dt_s)
    u = np.zeros(CONTROL_DIM)
    u[U.ACCEL] = accel
    return u


def guard_command(u: np.ndarray, state: np.ndarray, params: VehicleParams, control_dt_s: float) -> tuple[np.ndarray, bool]:
    """Clip a control to the actuator limits; a non-finite control or state becomes a safe stop.

    Returns (command, was_replaced_by_safe_stop).
    """
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    if u.shape != (CONTROL_DIM,) or not np.all(np.isfinite(u)) or state is None or not np.all(np.isfinite(state)):
        return safe_stop_command(state if state is not None and np.shape(state) == (STATE_DIM,) else None, params, control_dt_s), True
    out = u.copy()
    out[U.STEER_CMD] = np.clip(out[U.STEER_CMD], params.steer_min_rad, params.steer_max_rad)
    out[U.ACCEL] = np.clip(out[U.ACCEL], -params.accel_max_mps2, params.accel_max_mps2)
    return out, False
