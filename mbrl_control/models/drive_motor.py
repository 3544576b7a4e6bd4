"""Drive of a real car with a throttle-duty command: duty -> longitudinal force.

Written once in the vocabulary of :mod:`mbrl_control.ops` (``m``):

* **duty lag**: the ESC / motor current follows the duty command with a first-order lag,
  ``d(duty)/dt = (cmd - duty) / throttle_time_constant_s``;
* **motor**: a brushed DC motor with a dead zone: above ``throttle_dead_zone`` the effective duty
  ``e = duty - dead_zone`` gives the force ``e (motor_force_n - motor_speed_coeff_nspm vx)``
  (torque from the voltage ``e`` minus the back-EMF of the speed), zero at or below the dead zone;
* **resistance**: rolling ``rolling_resistance_n tanh(vx / 0.05)``, viscous drag
  ``drag_coeff_nspm vx`` and the extra scrub when steered, ``steer_friction_n steer^2 vx``.
"""

from __future__ import annotations


def duty_rate(m, duty, cmd, p):
    """d(duty)/dt of the first-order lag of the applied duty."""
    return (cmd - duty) * (1.0 / p.throttle_time_constant_s)


def motor_force(m, duty, vx, p):
    """Drive force [N] of the effective duty at forward speed ``vx`` (dead zone, back-EMF)."""
    e = m.max(duty - p.throttle_dead_zone, 0.0)
    return e * (p.motor_force_n - p.motor_speed_coeff_nspm * vx)


def resistance_force(m, vx, steer, p):
    """Resistance [N] opposing ``vx``: rolling, viscous drag and steering scrub."""
    return (p.rolling_resistance_n * m.tanh(vx * 20.0) + p.drag_coeff_nspm * vx
            + p.steer_friction_n * steer * steer * vx)
