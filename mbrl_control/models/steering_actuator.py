"""Steering actuator of a real car: raw command -> road-wheel angle.

Written once in the vocabulary of :mod:`mbrl_control.ops` (``m``), like :mod:`.actuation`:

* **map**: an asymmetric, offset linear map of the raw command (-1..1) to the steady road-wheel
  angle, ``offset + gain_left * cmd`` for ``cmd >= 0`` and ``offset + gain_right * cmd`` below
  (servo linkages and trims are rarely symmetric: DART's car gives +0.320 rad at +1 and -0.403 rad
  at -1);
* **lag**: a first-order servo, ``d(steer)/dt = (target - steer) / steer_time_constant_s``;
* **dead time**: ``steer_dead_time_s``, a pure delay of the command. A delay is not a term of a
  differential equation: :func:`delayed_commands` applies it to the command sequence (the commands
  already sent, ``past_commands``, followed by the planned ones), which is how the planners
  predict through the commands already sent. Identified on a recording, the "dead time" is the
  actuator's delay minus the recording's command latency, so it may come out negative.
"""

from __future__ import annotations

import numpy as np


def steering_map(m, cmd, p):
    """Steady road-wheel angle [rad] of the raw steering command ``cmd`` (asymmetric, offset)."""
    return p.steer_offset_rad + m.select(cmd >= 0.0, p.steer_gain_left_rad * cmd, p.steer_gain_right_rad * cmd)


def driver_steering_command(steering_angle_rad, params):
    """The raw command (-1..1 within the limits) a nominal driver makes of ``drive.steering_angle``:
    one scale, ``steer_max_rad`` (a linkage that follows it exactly turns the wheels to that angle)."""
    return steering_angle_rad * (1.0 / params.steer_max_rad)


def linkage_target(steering_angle_rad: float, params, terms) -> float:
    """The servo target [rad] a linkage with the map ``terms`` makes of ``drive.steering_angle``: the
    nominal driver's raw command (clipped to -1..1) through :func:`steering_map`."""
    from mbrl_control.ops import numpy_ops

    raw = min(max(float(driver_steering_command(steering_angle_rad, params)), -1.0), 1.0)
    return float(steering_map(numpy_ops, raw, terms))


def steering_command_for(angle_rad: float, p) -> float:
    """The raw command (-1..1) whose steady angle under :func:`steering_map` is ``angle_rad`` (clipped)."""
    offset_rad = float(angle_rad) - p.steer_offset_rad
    gain = p.steer_gain_left_rad if offset_rad >= 0.0 else p.steer_gain_right_rad
    return min(max(offset_rad / gain, -1.0), 1.0)


def steering_rate(m, steer, cmd, p):
    """d(steer)/dt of the first-order servo towards the mapped command."""
    return (steering_map(m, cmd, p) - steer) * (1.0 / p.steer_time_constant_s)


def delayed_commands(past: np.ndarray, future: np.ndarray, delay_s: float, dt: float) -> np.ndarray:
    """The commands ``future`` (..., H, m) as the actuator sees them ``delay_s`` later: step ``j`` gets
    the mean over ``[j dt - delay, (j+1) dt - delay)`` of the zero-order-held sequence
    ``past`` (..., P, m) + ``future`` (exact for a delay that is not a multiple of ``dt``, and
    continuous in it). Delays beyond the past reuse its first row. A negative delay looks ahead
    (recorded commands stamped later than the car applied them, as DART's 10 Hz snapshots are);
    past the last row, the last row is held."""
    full = np.concatenate([past, future], axis=-2)
    P, H = past.shape[-2], future.shape[-2]
    d = float(delay_s) / dt
    k = int(np.floor(d))
    f = d - k
    i0 = np.clip(P + np.arange(H) - k, 0, P + H - 1)
    i1 = np.clip(i0 - 1, 0, P + H - 1)
    return (1.0 - f) * full[..., i0, :] + f * full[..., i1, :]
