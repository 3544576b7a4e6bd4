"""The acceleration-commanded actuator of the single-track models: steering servo and drive limits.

Written once in the vocabulary of :mod:`mbrl_control.ops` (``m``); the single-track models call
these, and every backend (torch, CasADi, the Numba/CUDA kernels) derives from this text.
"""

from __future__ import annotations


def steering_servo(m, steer, steer_cmd, p):
    """Steering rate of a first-order servo saturating smoothly at the rate limit:
    ``sv_max tanh((cmd - steer) / (tau sv_max))``, zero when pushing past a steering bound."""
    cmd = m.clip(steer_cmd, p.steer_min_rad, p.steer_max_rad)
    sv_max = p.steer_rate_max_radps
    rate = sv_max * m.tanh((cmd - steer) * (1.0 / (p.steer_time_constant_s * sv_max)))
    blocked = m.logical_or(m.logical_and(steer <= p.steer_min_rad, rate < 0.0),
                           m.logical_and(steer >= p.steer_max_rad, rate > 0.0))
    return m.select(blocked, 0.0, rate)


def power_limited_acceleration(m, v, p):
    """Largest forward acceleration at speed ``v`` [m/s^2]: ``a_max`` up to ``v_switch``, then the
    power limit ``a_max v_switch / v`` (CommonRoad)."""
    return p.accel_max_mps2 * p.v_switch_mps / m.max(v, p.v_switch_mps)


def drive_acceleration(m, v, accel_cmd, p):
    """(achieved acceleration, dv/dt with quadratic drag): CommonRoad's power limit above
    ``v_switch``, the acceleration bound, and no acceleration past the speed bounds."""
    a_max = p.accel_max_mps2
    pos_limit = power_limited_acceleration(m, v, p)
    a = m.min(m.max(accel_cmd, -a_max), pos_limit)
    stopped = m.logical_or(m.logical_and(v <= p.v_min_mps, a <= 0.0), m.logical_and(v >= p.v_max_mps, a >= 0.0))
    a = m.select(stopped, 0.0, a)
    return a, a - p.drag_coeff_per_m * v * m.abs(v)


def speed_after_one_period(v_mps, accel_mps2, dt_s):
    """``drive.speed`` sent beside an acceleration command: the speed after one period, ``v + a dt``.

    An acceleration-following driver ignores it; ``bag.reader.accel_from_speed_setpoint`` inverts it
    for recordings whose acceleration field is empty.
    """
    return v_mps + accel_mps2 * dt_s
