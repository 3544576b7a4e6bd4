"""The command interface: what the car's driver follows, and the command that makes it do the plan.

The planners plan in physical units (steering angle, acceleration) on the vehicle model. A car's
driver takes one of two interfaces of AckermannDrive:

* ``acceleration``: it applies ``acceleration`` (and ``steering_angle``) as the model does; the
  ``speed`` field carries ``v + a dt`` for drivers that read it;
* ``speed``: it follows the ``speed`` set-point with its own loop (a VESC in speed mode, the
  F1TENTH community simulator), :mod:`mbrl_control.models.speed_loop`. The published set-point is
  the loop's inverse, so that the loop produces the planned acceleration (with the gains
  identified online by :class:`mbrl_control.sysid.actuator_id.ActuatorIdentifier`, or given).

A steering dead time is compensated by predicting the measured state through the commands already
sent (:meth:`CommandInterface.predict`): the plan starts where the car will be when the new
command takes effect.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from mbrl_control.config import VehicleParams
from mbrl_control.models.actuation import power_limited_acceleration, speed_after_one_period, steering_servo
from mbrl_control.models.base import integrate_step
from mbrl_control.models.layout import CONTROL_DIM, S, U
from mbrl_control.models.motion_model import numpy_derivative
from mbrl_control.models.single_track import DynamicSingleTrackModel
from mbrl_control.models.speed_loop import setpoint_step_factor
from mbrl_control.ops import numpy_ops

INTERFACES = ("acceleration", "speed")
STEERING_ACTUATORS = ("servo", "rate_limit")
PRIOR_SPEED_GAIN_PER_S = 8.0
"""Speed-loop gain assumed until the first identification (between the F1TENTH values 4.8 and 19)."""
MAX_DEAD_TIME_S = 0.5
SERVO_SUBSTEPS = 4
"""Euler substeps of the planning servo over one period (its time constant is >= 2.5 periods)."""
STANDSTILL_MPS = 0.05
"""A car moving faster than this is never sent a set-point of the opposite sign (braking stops at 0)."""


@dataclass(frozen=True)
class ActuationConfig:
    """How the driver takes commands (``interface``), its terms, and whether to identify them.

    A gain of 0 means unknown: :data:`PRIOR_SPEED_GAIN_PER_S` until identified. ``steering`` is the
    steering actuator (``servo``: the model's first-order servo, sent the plan's servo command;
    ``rate_limit``: turns at the full rate until on the commanded angle, like f1tenth_gym's and a
    hobby servo, sent the angle the plan's servo reaches at the end of the period).
    """

    interface: str = "acceleration"
    speed_gain_up_per_s: float = 0.0
    speed_gain_down_per_s: float = 0.0
    steer_dead_time_s: float = 0.0
    steering: str = "servo"
    identify: bool = True

    def validate(self) -> None:
        if self.interface not in INTERFACES:
            raise ValueError(f"interface must be one of {', '.join(INTERFACES)}, got {self.interface!r}")
        if self.steering not in STEERING_ACTUATORS:
            raise ValueError(f"steering must be one of {', '.join(STEERING_ACTUATORS)}, got {self.steering!r}")
        for name in ("speed_gain_up_per_s", "speed_gain_down_per_s"):
            if not 0.0 <= getattr(self, name) <= 1000.0:
                raise ValueError(f"{name} must be in [0, 1000] (0: unknown), got {getattr(self, name)}")
        if not 0.0 <= self.steer_dead_time_s <= MAX_DEAD_TIME_S:
            raise ValueError(f"steer_dead_time_s must be in [0, {MAX_DEAD_TIME_S}], got {self.steer_dead_time_s}")


def f1tenth_speed_actuation(params: VehicleParams, steer_dead_time_s: float = 0.02) -> ActuationConfig:
    """The driver of f1tenth_gym and the F1TENTH community simulator: speed loop gains
    ``10 a_max / v_max`` up and ``10 a_max / |v_min|`` down, rate-limited steering after a dead time."""
    return ActuationConfig(interface="speed", speed_gain_up_per_s=10.0 * params.accel_max_mps2 / params.v_max_mps,
                           speed_gain_down_per_s=10.0 * params.accel_max_mps2 / abs(params.v_min_mps),
                           steer_dead_time_s=steer_dead_time_s, steering="rate_limit", identify=False)


def load_actuation(options, section: str = "actuation") -> ActuationConfig:
    """An :class:`ActuationConfig` from a YAML mapping (or a plain interface name), validated once."""
    from mbrl_control.config import dataclass_from_dict

    if isinstance(options, str):
        options = {"interface": options}
    return dataclass_from_dict(ActuationConfig, options, section)


class CommandInterface:
    """Planned control -> the AckermannDrive fields the driver expects; dead-time prediction."""

    def __init__(self, config: ActuationConfig, params: VehicleParams, control_dt_s: float) -> None:
        self.config = config
        self.params = params
        self.dt_s = float(control_dt_s)
        self.gain_up_per_s = config.speed_gain_up_per_s or PRIOR_SPEED_GAIN_PER_S
        self.gain_down_per_s = config.speed_gain_down_per_s or PRIOR_SPEED_GAIN_PER_S
        self.dead_time_s = float(config.steer_dead_time_s)
        history = int(np.ceil(MAX_DEAD_TIME_S / self.dt_s)) + 1
        self._sent: deque[np.ndarray] = deque(maxlen=history)

    @property
    def interface(self) -> str:
        return self.config.interface

    def set_identified(self, gain_up_per_s: float | None = None, gain_down_per_s: float | None = None,
                       dead_time_s: float | None = None) -> None:
        """Adopt identified terms (None keeps the current one); values are checked for plausibility."""
        if gain_up_per_s is not None and 0.05 <= gain_up_per_s <= 1000.0:
            self.gain_up_per_s = float(gain_up_per_s)
        if gain_down_per_s is not None and 0.05 <= gain_down_per_s <= 1000.0:
            self.gain_down_per_s = float(gain_down_per_s)
        if dead_time_s is not None and 0.0 <= dead_time_s <= MAX_DEAD_TIME_S:
            self.dead_time_s = float(dead_time_s)

    def adopt(self, estimates: dict[str, float]) -> None:
        """Adopt what :meth:`ActuatorIdentifier.poll <mbrl_control.sysid.actuator_id.ActuatorIdentifier.poll>`
        returned (``speed_gain_up_per_s``, ``speed_gain_down_per_s``, ``steer_dead_time_s``; absent keys stay)."""
        self.set_identified(estimates.get("speed_gain_up_per_s"), estimates.get("speed_gain_down_per_s"),
                            estimates.get("steer_dead_time_s"))

    def reset(self) -> None:
        self._sent.clear()

    # ------------------------------------------------------------------ dead time
    def predict(self, state: np.ndarray) -> np.ndarray:
        """The state when a command sent now takes effect: ``state`` integrated over the dead time
        with the commands already sent (RK4 per control period, on the vehicle's physics)."""
        remaining = self.dead_time_s
        if remaining <= 1e-6 or not self._sent or not np.all(np.isfinite(state)):
            return state
        x = np.asarray(state, dtype=np.float64)
        # the command sent k periods ago acts during [now + (d - (k+1) dt), now + (d - k dt)); the ones
        # still to act after now are the last ceil(d / dt) sent, oldest first
        n = int(np.ceil(remaining / self.dt_s - 1e-9))
        in_flight = list(self._sent)[-n:]
        first = remaining - (n - 1) * self.dt_s
        for i, u in enumerate(in_flight):
            x = self._rk4(x, u, first if i == 0 else self.dt_s)
        return x

    def _rk4(self, x: np.ndarray, u: np.ndarray, h: float) -> np.ndarray:
        return integrate_step(lambda s, c: numpy_derivative(DynamicSingleTrackModel, s, c, self.params), x, u, h, "rk4")

    # ------------------------------------------------------------------ the wire
    def wire_command(self, u: np.ndarray, state: np.ndarray) -> np.ndarray:
        """``[steering_angle_rad, acceleration_mps2, speed_mps]`` for the planned control ``u`` at the
        (predicted) ``state``, every field within the vehicle limits; remembers ``u`` as sent."""
        p = self.params
        steer = float(np.clip(u[U.STEER_CMD], p.steer_min_rad, p.steer_max_rad))
        published_steer = steer
        if self.config.steering == "rate_limit" and np.isfinite(state[S.STEER]):
            published_steer = self._planned_angle(float(state[S.STEER]), steer)
        v = float(state[S.V]) if np.isfinite(state[S.V]) else 0.0
        accel = float(np.clip(u[U.ACCEL], -p.accel_max_mps2, p.accel_max_mps2))
        speed = self.speed_field(v, accel)
        sent = np.zeros(CONTROL_DIM)
        sent[U.STEER_CMD], sent[U.ACCEL] = steer, accel
        self._sent.append(sent)
        return np.array([published_steer, accel, speed])

    def _planned_angle(self, steer_rad: float, command_rad: float) -> float:
        """The steering angle the plan's servo reaches at the end of this period: what a driver that
        turns at its full rate until on the commanded angle must be sent to steer as planned."""
        h = self.dt_s / SERVO_SUBSTEPS
        for _ in range(SERVO_SUBSTEPS):
            steer_rad += h * float(steering_servo(numpy_ops, steer_rad, command_rad, self.params))
        return float(np.clip(steer_rad, self.params.steer_min_rad, self.params.steer_max_rad))

    def speed_field(self, v_mps: float, accel_mps2: float) -> float:
        """``drive.speed`` for the acceleration ``accel_mps2`` at speed ``v_mps`` (no side effect: the
        watchdog's stop uses it too), within the speed limits."""
        if self.config.interface == "speed":
            speed = self._speed_setpoint(v_mps, accel_mps2)
        else:
            speed = speed_after_one_period(v_mps, accel_mps2, self.dt_s)
        return float(np.clip(speed, self.params.v_min_mps, self.params.v_max_mps))

    def _speed_setpoint(self, v_mps: float, accel_mps2: float) -> float:
        """Inverse of the speed loop for the acceleration the drive can give (power limit above
        ``v_switch``); never across standstill (a forward car is not sent into reverse by a brake)."""
        p = self.params
        if accel_mps2 > 0.0 and v_mps > p.v_switch_mps:
            accel_mps2 = min(accel_mps2, float(power_limited_acceleration(numpy_ops, v_mps, p)))
        gain = self.gain_up_per_s if accel_mps2 >= 0.0 else self.gain_down_per_s
        speed = v_mps + accel_mps2 * setpoint_step_factor(gain, self.dt_s)
        if (v_mps > STANDSTILL_MPS and speed < 0.0) or (v_mps < -STANDSTILL_MPS and speed > 0.0):
            speed = 0.0
        return speed
