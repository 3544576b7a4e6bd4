"""The controls a car applied, from the commands it was sent: what a refit must pair with the states.

A model is refit on (state, control) pairs. On a car whose actuators differ from the nominal, the
command on the wire (``drive.steering_angle``, ``drive.acceleration``) is not what the wheels and
the drive did: the steering command reaches the linkage after a dead time and is mapped by
:func:`mbrl_control.models.steering_actuator.steering_map`, the acceleration goes through
:mod:`mbrl_control.models.throttle_dead_zone`. :class:`AppliedControls` applies those same actuator
models, with terms given or identified online (``adopt``), so the controller, the simulator's
online refit and ``sysid_node`` see one definition of the car's actuators.
"""

from __future__ import annotations

import math

import numpy as np

from mbrl_control.config import VehicleParams
from mbrl_control.models.layout import CONTROL_DIM, U
from mbrl_control.control.command_interface import CALIBRATION_TERMS
from mbrl_control.models.steering_actuator import delayed_commands, linkage_target
from mbrl_control.models.throttle_dead_zone import dead_zone_acceleration
from mbrl_control.ops import numpy_ops


class AppliedControls:
    """Wire commands -> applied controls ``[steering target, acceleration]`` (the model's control layout)."""

    def __init__(self, params: VehicleParams, dt_s: float, terms, dead_time_s: float = 0.0,
                 max_dead_time_s: float = 0.5) -> None:
        """``terms``: a record with the steering map's gains and offset and the throttle dead zone
        (:func:`mbrl_control.control.command_interface.calibration_terms`), shared with its owner."""
        self.params = params
        self.dt_s = float(dt_s)
        self.terms = terms
        self.dead_time_s = float(dead_time_s)
        self._history = np.zeros((int(math.ceil(max_dead_time_s / self.dt_s)) + 2, 1))  # servo targets, oldest first
        self._started = False

    def adopt(self, estimates: dict[str, float]) -> None:
        """Take identified terms (the keys :class:`~mbrl_control.sysid.actuator_id.ActuatorIdentifier` reports)."""
        for name in CALIBRATION_TERMS:
            if estimates.get(name) is not None:
                setattr(self.terms, name, float(estimates[name]))
        if estimates.get("steer_dead_time_s") is not None:
            self.dead_time_s = float(estimates["steer_dead_time_s"])

    def nominal(self) -> bool:
        """Whether the actuators are the nominal ones (identity map, no dead time, no dead zone)."""
        t, p = self.terms, self.params
        return (self.dead_time_s == 0.0 and t.steer_offset_rad == 0.0 and t.throttle_dead_zone == 0.0
                and t.steer_gain_left_rad == p.steer_max_rad and t.steer_gain_right_rad == p.steer_max_rad)

    def applied(self, wire: np.ndarray) -> np.ndarray:
        """The control the car applies over the period that starts as ``wire`` is sent: the steering
        target of the commands sent a dead time earlier (continuous in the delay), the acceleration now."""
        target = linkage_target(float(wire[0]), self.params, self.terms)
        if not self._started:  # before the first command: the first one held
            self._history[:, 0], self._started = target, True
        else:
            self._history[:-1] = self._history[1:]
            self._history[-1, 0] = target
        if self.nominal():  # applies what it was sent (bit for bit: no round trip through the maps)
            return np.array(wire[:CONTROL_DIM], dtype=np.float64)
        u = np.zeros(CONTROL_DIM)
        u[U.STEER_CMD] = float(delayed_commands(self._history[:-1], self._history[-1:], self.dead_time_s, self.dt_s)[0, 0])
        u[U.ACCEL] = float(dead_zone_acceleration(numpy_ops, float(wire[1]), self.terms))
        return u
