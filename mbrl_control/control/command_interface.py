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

A car's actuators may also differ from the nominal calibration: the steering linkage maps the
driver's command (``steering_angle / steer_max``, -1..1) to the road-wheel angle asymmetrically
and with a trim offset (:func:`mbrl_control.models.steering_actuator.steering_map`), and the
throttle has a dead zone (:mod:`mbrl_control.models.throttle_dead_zone`). The published fields
are the inverses of those maps, so that the wheels turn to the planned angle and the drive gives
the planned acceleration; with ``calibration: identify`` the terms are identified online.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from mbrl_control.config import VehicleParams
from mbrl_control.models.actuation import power_limited_acceleration, speed_after_one_period, steering_servo
from mbrl_control.kernels.dead_time import dead_time_kernel
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S, U
from mbrl_control.models.single_track import DynamicSingleTrackModel
from mbrl_control.models.speed_loop import setpoint_step_factor
from mbrl_control.models.steering_actuator import steering_command_for
from mbrl_control.models.throttle_dead_zone import MAX_DEAD_ZONE, command_for_acceleration
from mbrl_control.ops import numpy_ops

INTERFACES = ("acceleration", "speed")
STEERING_ACTUATORS = ("servo", "rate_limit")
CALIBRATIONS = ("nominal", "identify")
"""Steering map and throttle dead zone: as configured (nominal unless given), or identified online."""
PRIOR_SPEED_GAIN_PER_S = 8.0
"""Speed-loop gain assumed until the first identification (between the F1TENTH values 4.8 and 19)."""
MAX_DEAD_TIME_S = 0.5
MIN_STEER_GAIN_RAD, MAX_STEER_GAIN_RAD = 0.05, 1.5
MAX_STEER_OFFSET_RAD = 0.2
CALIBRATION_TERMS = ("steer_gain_left_rad", "steer_gain_right_rad", "steer_offset_rad", "throttle_dead_zone")
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

    The steering map's gains (road-wheel angle at full left / right command, 0: nominal, the
    vehicle's ``steer_max_rad``), its trim offset and the throttle dead zone (a fraction of the full
    command) describe the car's calibration; ``calibration: identify`` identifies them online.
    """

    interface: str = "acceleration"
    speed_gain_up_per_s: float = 0.0
    speed_gain_down_per_s: float = 0.0
    steer_dead_time_s: float = 0.0
    steering: str = "servo"
    identify: bool = True
    steer_gain_left_rad: float = 0.0
    steer_gain_right_rad: float = 0.0
    steer_offset_rad: float = 0.0
    throttle_dead_zone: float = 0.0
    calibration: str = "nominal"

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
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}")
        if self.calibration == "identify" and self.steering != "servo":
            raise ValueError("calibration 'identify' models the steering as the vehicle's first-order servo: with "
                             f"steering {self.steering!r} give the terms (calibration 'nominal')")
        for name in ("steer_gain_left_rad", "steer_gain_right_rad"):
            if not (getattr(self, name) == 0.0 or MIN_STEER_GAIN_RAD <= getattr(self, name) <= MAX_STEER_GAIN_RAD):
                raise ValueError(f"{name} must be 0 (nominal) or in [{MIN_STEER_GAIN_RAD}, {MAX_STEER_GAIN_RAD}], "
                                 f"got {getattr(self, name)}")
        if not abs(self.steer_offset_rad) <= MAX_STEER_OFFSET_RAD:
            raise ValueError(f"steer_offset_rad must be within +-{MAX_STEER_OFFSET_RAD}, got {self.steer_offset_rad}")
        if not 0.0 <= self.throttle_dead_zone < MAX_DEAD_ZONE:
            raise ValueError(f"throttle_dead_zone must be in [0, {MAX_DEAD_ZONE}), got {self.throttle_dead_zone}")


def f1tenth_speed_actuation(params: VehicleParams, steer_dead_time_s: float = 0.02) -> ActuationConfig:
    """The driver of f1tenth_gym and the F1TENTH community simulator: speed loop gains
    ``10 a_max / v_max`` up and ``10 a_max / |v_min|`` down, rate-limited steering after a dead time."""
    return ActuationConfig(interface="speed", speed_gain_up_per_s=10.0 * params.accel_max_mps2 / params.v_max_mps,
                           speed_gain_down_per_s=10.0 * params.accel_max_mps2 / abs(params.v_min_mps),
                           steer_dead_time_s=steer_dead_time_s, steering="rate_limit", identify=False)


def miscalibrated_actuation(params: VehicleParams, steer_dead_time_s: float = 0.08) -> ActuationConfig:
    """A car whose actuators are not as nominal (``--actuation miscalibrated``): the steering linkage
    gives 30 % more angle to the left than nominal and 8 % more to the right with a trim of -0.015 rad
    (asymmetric like the DART car's, which gives +0.320 / -0.403 rad at full command), the steering
    command acts after ``steer_dead_time_s``, and the throttle has a 15 % dead zone."""
    return ActuationConfig(interface="acceleration", steer_dead_time_s=steer_dead_time_s, steering="servo",
                           identify=False, steer_gain_left_rad=1.3 * params.steer_max_rad,
                           steer_gain_right_rad=1.08 * params.steer_max_rad, steer_offset_rad=-0.015,
                           throttle_dead_zone=0.15)


def load_actuation(options, section: str = "actuation") -> ActuationConfig:
    """An :class:`ActuationConfig` from a YAML mapping (or a plain interface name), validated once."""
    from mbrl_control.config import dataclass_from_dict

    if isinstance(options, str):
        options = {"interface": options}
    return dataclass_from_dict(ActuationConfig, options, section)


def calibration_terms(config: ActuationConfig, params: VehicleParams) -> SimpleNamespace:
    """The steering map and throttle terms of ``config`` as the record the actuator models read
    (a gain of 0 is the nominal one: ``steer_max_rad``, the driver's own scale)."""
    return SimpleNamespace(steer_gain_left_rad=config.steer_gain_left_rad or params.steer_max_rad,
                           steer_gain_right_rad=config.steer_gain_right_rad or params.steer_max_rad,
                           steer_offset_rad=config.steer_offset_rad, throttle_dead_zone=config.throttle_dead_zone,
                           accel_max_mps2=params.accel_max_mps2)


class CommandInterface:
    """Planned control -> the AckermannDrive fields the driver expects; dead-time prediction."""

    def __init__(self, config: ActuationConfig, params: VehicleParams, control_dt_s: float) -> None:
        self.config = config
        self.params = params
        self.dt_s = float(control_dt_s)
        self.gain_up_per_s = config.speed_gain_up_per_s or PRIOR_SPEED_GAIN_PER_S
        self.gain_down_per_s = config.speed_gain_down_per_s or PRIOR_SPEED_GAIN_PER_S
        self.dead_time_s = float(config.steer_dead_time_s)
        self.calibration = calibration_terms(config, params)
        self.steering_target_rad = 0.0
        """The angle the wheels were last sent to (before the steering map's inverse): a steering estimator's input."""
        history = int(np.ceil(MAX_DEAD_TIME_S / self.dt_s)) + 1
        self._sent = np.zeros((history, CONTROL_DIM))   # ring of the commands sent, row _head is the next
        self._head = 0
        self._count = 0
        self._predicted = np.zeros(STATE_DIM)
        self._param_vector = DynamicSingleTrackModel.param_vector(params, dtype=np.float64)
        self._predict_in_flight = dead_time_kernel(DynamicSingleTrackModel)
        self._predict_in_flight(self._predicted, self._sent, 0, 0, 0.0, self.dt_s, self._param_vector,
                                self._predicted)  # compiled (or loaded from the cache) now, not at the first step

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

    def set_calibration(self, steer_gain_left_rad: float | None = None, steer_gain_right_rad: float | None = None,
                        steer_offset_rad: float | None = None, throttle_dead_zone: float | None = None) -> None:
        """Adopt identified steering-map and throttle terms (None keeps the current one; implausible ones are ignored)."""
        c = self.calibration
        for name, value in (("steer_gain_left_rad", steer_gain_left_rad), ("steer_gain_right_rad", steer_gain_right_rad)):
            if value is not None and MIN_STEER_GAIN_RAD <= value <= MAX_STEER_GAIN_RAD:
                setattr(c, name, float(value))
        if steer_offset_rad is not None and abs(steer_offset_rad) <= MAX_STEER_OFFSET_RAD:
            c.steer_offset_rad = float(steer_offset_rad)
        if throttle_dead_zone is not None and 0.0 <= throttle_dead_zone < MAX_DEAD_ZONE:
            c.throttle_dead_zone = float(throttle_dead_zone)

    def adopt(self, estimates: dict[str, float]) -> None:
        """Adopt what :meth:`ActuatorIdentifier.poll <mbrl_control.sysid.actuator_id.ActuatorIdentifier.poll>`
        returned (speed-loop gains, steering dead time, steering map, throttle dead zone; absent keys stay)."""
        self.set_identified(estimates.get("speed_gain_up_per_s"), estimates.get("speed_gain_down_per_s"),
                            estimates.get("steer_dead_time_s"))
        self.set_calibration(*(estimates.get(name) for name in CALIBRATION_TERMS))

    def terms(self) -> dict[str, float]:
        """The terms in use now: speed-loop gains, steering dead time, steering map, throttle dead zone."""
        return {"speed_gain_up_per_s": self.gain_up_per_s, "speed_gain_down_per_s": self.gain_down_per_s,
                "steer_dead_time_s": self.dead_time_s,
                **{name: getattr(self.calibration, name) for name in CALIBRATION_TERMS}}

    def reset(self) -> None:
        self._head = self._count = 0

    # ------------------------------------------------------------------ dead time
    def predict(self, state: np.ndarray) -> np.ndarray:
        """The state when a command sent now takes effect: ``state`` integrated over the dead time
        with the commands already sent (RK4 per control period, on the vehicle's physics)."""
        remaining = self.dead_time_s
        if remaining <= 1e-6 or self._count == 0 or not np.all(np.isfinite(state)):
            return state
        # the command sent k periods ago acts during [now + (d - (k+1) dt), now + (d - k dt)); the ones
        # still to act after now are the last ceil(d / dt) sent, oldest first
        n = int(np.ceil(remaining / self.dt_s - 1e-9))
        first = remaining - (n - 1) * self.dt_s
        self._predict_in_flight(np.asarray(state, dtype=np.float64), self._sent, min(n, self._count), self._head,
                                first, self.dt_s, self._param_vector, self._predicted)
        return self._predicted.copy()  # the caller keeps it; the buffer is reused next step

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
        sent = self._sent[self._head]
        sent[U.STEER_CMD], sent[U.ACCEL] = steer, accel
        self._head = (self._head + 1) % len(self._sent)
        self._count = min(self._count + 1, len(self._sent))
        self.steering_target_rad = published_steer
        return np.array([self.calibrated_steering(published_steer), self.calibrated_acceleration(accel), speed])

    def calibrated_steering(self, angle_rad: float) -> float:
        """``drive.steering_angle`` that turns the wheels to ``angle_rad`` through the car's steering map."""
        c, p = self.calibration, self.params
        if c.steer_offset_rad == 0.0 and c.steer_gain_left_rad == c.steer_gain_right_rad == p.steer_max_rad:
            return angle_rad  # nominal: the angle itself (already within the limits)
        raw = steering_command_for(angle_rad, c)  # the inverse of models.steering_actuator.driver_steering_command:
        return min(max(raw * p.steer_max_rad, p.steer_min_rad), p.steer_max_rad)

    def calibrated_acceleration(self, accel_mps2: float) -> float:
        """``drive.acceleration`` that makes a drive with the car's throttle dead zone give ``accel_mps2``."""
        return command_for_acceleration(accel_mps2, self.calibration.throttle_dead_zone, self.params.accel_max_mps2)

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
