"""Dynamic single-track model of a real car driven by raw commands (throttle duty, steering).

The one written definition for cars identified from real telemetry (``models/dart.yaml``): the
state at the centre of mass with the two actuator states, the raw commands as controls, the
actuators of :mod:`.steering_actuator` and :mod:`.drive_motor`, and simplified Pacejka lateral
tyre forces ``D sin(C atan(B alpha))`` on each axle. The slip angles use ``max(vx, slip_min_speed_mps)``
so that the model stays well posed at walking speed, and below ``kinematic_blend_high_mps`` the
lateral and yaw accelerations are blended (smoothstep, fully kinematic below
``kinematic_blend_low_mps``) with a fast relaxation (``kinematic_relax_time_s``) towards the
kinematic bicycle's ``w = vx tan(steer) / (lf + lr)`` and ``vy = lr w`` (no slip at walking speed,
where the tyre terms are stiff and ill-determined), as in :mod:`.single_track`. Every backend form derives from
:meth:`CommandedSingleTrackModel.derivative` (torch via ``torch_derivative``, NumPy via
``numpy_derivative``, CasADi via ``casadi_derivative``).

The steering dead time is not part of the derivative: the controls are the commands as the
actuators receive them (see :func:`.steering_actuator.delayed_commands`).
"""

from __future__ import annotations

import numpy as np

from mbrl_control.models.drive_motor import duty_rate, motor_force, resistance_force
from mbrl_control.models.motion_model import MotionModel, Quantity
from mbrl_control.models.steering_actuator import steering_rate

IDENTIFIED_PARAMS = (
    "steer_gain_left_rad", "steer_gain_right_rad", "steer_offset_rad", "steer_time_constant_s", "steer_dead_time_s",
    "throttle_time_constant_s", "throttle_dead_zone", "motor_force_n", "motor_speed_coeff_nspm",
    "rolling_resistance_n", "drag_coeff_nspm", "tyre_peak_front_n", "tyre_peak_rear_n", "tyre_stiffness_front",
    "tyre_stiffness_rear", "tyre_shape", "steer_friction_n",
)
"""Parameters identified from data (initial values in the vehicle YAML's ``identified`` section)."""
FIXED_PARAMS = ("mass_kg", "lf_m", "lr_m", "yaw_inertia_kgm2", "slip_min_speed_mps", "kinematic_blend_low_mps",
                "kinematic_blend_high_mps", "kinematic_relax_time_s")
"""Vehicle facts, the numerical slip floor and the low-speed kinematic blend."""


def lateral_tyre_force(m, alpha, peak, stiffness, shape):
    """Simplified Pacejka lateral force [N] of slip angle ``alpha`` [rad]."""
    return peak * m.sin(shape * m.atan(stiffness * alpha))


class CommandedSingleTrackModel(MotionModel):
    """Single-track dynamics at the centre of mass with steering and drive actuators."""

    name = "commanded_single_track"
    states = (Quantity("x", "m"), Quantity("y", "m"), Quantity("yaw", "rad"), Quantity("vx", "m/s"),
              Quantity("vy", "m/s"), Quantity("w", "rad/s"), Quantity("steer", "rad", "road-wheel angle"),
              Quantity("duty", "1", "applied throttle duty after the lag"))
    controls = (Quantity("throttle", "1", "throttle duty 0..1"), Quantity("steering", "1", "steering command -1..1"))
    param_names = FIXED_PARAMS + IDENTIFIED_PARAMS

    @staticmethod
    def derivative(m, x, u, p):
        s_y, c_y = m.sin_cos(x.yaw)
        vx_s = m.max(x.vx, p.slip_min_speed_mps)
        alpha_f = x.steer - m.atan((x.vy + p.lf_m * x.w) / vx_s)
        alpha_r = -m.atan((x.vy - p.lr_m * x.w) / vx_s)
        fyf = lateral_tyre_force(m, alpha_f, p.tyre_peak_front_n, p.tyre_stiffness_front, p.tyre_shape)
        fyr = lateral_tyre_force(m, alpha_r, p.tyre_peak_rear_n, p.tyre_stiffness_rear, p.tyre_shape)
        fx = motor_force(m, x.duty, x.vx, p) - resistance_force(m, x.vx, x.steer, p)
        s_d, c_d = m.sin_cos(x.steer)
        inv_m = 1.0 / p.mass_kg
        dvy_dyn = (fyr + fyf * c_d) * inv_m - x.vx * x.w
        dw_dyn = (p.lf_m * fyf * c_d - p.lr_m * fyr) * (1.0 / p.yaw_inertia_kgm2)
        w_kin = x.vx * m.tan(x.steer) * (1.0 / (p.lf_m + p.lr_m))
        relax = 1.0 / p.kinematic_relax_time_s
        b = m.clip((x.vx - p.kinematic_blend_low_mps) * (1.0 / (p.kinematic_blend_high_mps - p.kinematic_blend_low_mps)),
                   0.0, 1.0)
        b = b * b * (3.0 - 2.0 * b)
        return (x.vx * c_y - x.vy * s_y, x.vx * s_y + x.vy * c_y, x.w,
                (fx - fyf * s_d) * inv_m + x.vy * x.w,
                b * dvy_dyn + (1.0 - b) * (p.lr_m * w_kin - x.vy) * relax,
                b * dw_dyn + (1.0 - b) * (w_kin - x.w) * relax,
                steering_rate(m, x.steer, u.steering, p),
                duty_rate(m, x.duty, u.throttle, p))

    @classmethod
    def control_bounds(cls, params):
        return np.array([0.0, -1.0]), np.array([1.0, 1.0])

    @classmethod
    def safe_stop(cls, state, params):
        return np.array([0.0, 0.0])
