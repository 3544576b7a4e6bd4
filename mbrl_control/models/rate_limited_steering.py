"""Rate-limited steering: a servo that turns at its full rate until it reaches the commanded angle.

Written once in the vocabulary of :mod:`mbrl_control.ops` (``m``). The f1tenth_gym / F1TENTH
community simulator steers "bang-bang": ``+-steer_rate_max`` towards the (delayed) command and
stops on it. Over a zero-order-held step of ``dt_s`` that is the rate ``clip((target - steer) / dt,
-rate_max, rate_max)``: it reaches a target within ``rate_max dt`` exactly, and otherwise turns at
the limit. The dead time in front of it is :func:`.steering_actuator.delayed_commands`.
"""

from __future__ import annotations


def rate_limited_steering_rate(m, steer, target, dt_s, p):
    """Steering rate [rad/s] held over the next ``dt_s`` towards ``target`` (clipped to the steering range)."""
    target = m.clip(target, p.steer_min_rad, p.steer_max_rad)
    rate_max = p.steer_rate_max_radps
    return m.clip((target - steer) * (1.0 / dt_s), -rate_max, rate_max)
