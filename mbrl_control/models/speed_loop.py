"""Speed set-point actuator: the driver (a VESC, f1tenth_gym's ``pid``) follows a commanded speed.

Written once in the vocabulary of :mod:`mbrl_control.ops` (``m``). The driver's proportional loop
produces the acceleration ``g (v_set - v)``, with one gain when speeding up
(``speed_gain_up_per_s``) and another when slowing down (``speed_gain_down_per_s``), clipped to
``+-accel_max_mps2``; the drive limits of :func:`.actuation.drive_acceleration` (power limit,
speed bounds, drag) apply after it.

:func:`speed_setpoint_for` is the loop's inverse, in closed form: the set-point held over one
control period ``dt`` whose exponential response changes the speed by ``a dt``, i.e. produces
the mean acceleration ``a`` the planner asked for.
"""

from __future__ import annotations

import math

import numpy as np

SPEED_LOOP_PARAMS = ("speed_gain_up_per_s", "speed_gain_down_per_s", "accel_max_mps2")
"""What the speed loop reads (the gains are identified; ``accel_max_mps2`` is the vehicle's)."""


def speed_loop_gain(m, v, v_set, p):
    """The loop gain [1/s] in effect: ``speed_gain_up_per_s`` towards a higher speed, else the other."""
    return m.select(v_set >= v, p.speed_gain_up_per_s, p.speed_gain_down_per_s)


def speed_loop_acceleration(m, v, v_set, p):
    """Acceleration command [m/s^2] the driver produces: ``g (v_set - v)`` clipped to ``+-accel_max``."""
    a = speed_loop_gain(m, v, v_set, p) * (v_set - v)
    return m.clip(a, -p.accel_max_mps2, p.accel_max_mps2)


def setpoint_step_factor(gain_per_s: float, dt_s: float) -> float:
    """``dt / (1 - exp(-g dt))``: the set-point offset per unit of mean acceleration over ``dt``
    (``1 / g + dt / 2`` for a slow loop, ``dt`` for an instantaneous one)."""
    x = gain_per_s * dt_s
    return dt_s / -math.expm1(-x) if x > 1e-9 else 1.0 / max(gain_per_s, 1e-12)


def speed_setpoint_for(v_mps: float, accel_mps2: float, dt_s: float, gain_up_per_s: float,
                       gain_down_per_s: float) -> float:
    """The set-point that makes the unsaturated loop change the speed by ``accel dt`` over ``dt``:
    ``v + accel dt / (1 - exp(-g dt))`` with the gain of the direction of ``accel``. Exact for the
    loop of :func:`speed_loop_acceleration` while it does not saturate and no drag acts."""
    gain = gain_up_per_s if accel_mps2 >= 0.0 else gain_down_per_s
    return float(v_mps + accel_mps2 * setpoint_step_factor(gain, dt_s))


def speed_after(v0_mps: np.ndarray, v_set_mps: np.ndarray, gain_per_s: np.ndarray, t_s: float) -> np.ndarray:
    """Closed-form speed after ``t_s`` of the unsaturated loop from ``v0`` (the step response)."""
    return v_set_mps + (v0_mps - v_set_mps) * np.exp(-gain_per_s * t_s)
