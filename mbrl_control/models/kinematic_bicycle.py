"""Kinematic bicycle (single-track) model at the centre of gravity, in the shared 7-state layout.

The one written definition: the torch module :class:`mbrl_control.models.bicycle.KinematicBicycle`,
the CasADi expressions (NMPC, iLQR/DDP derivatives) and the fused Numba/CUDA kernels all derive
from :meth:`KinematicBicycleModel.derivative`. Yaw rate and slip are carried as states whose
derivatives keep them equal to their kinematic values (CommonRoad's low-speed model), so the
layout matches the dynamic model. The slip rate is the exact time derivative of
``atan(tan(steer) lr / l_wb)`` (CommonRoad's printed expression squares ``tan(steer)`` once too
often). ``tan``, ``atan`` and trigonometry of sums are written through ``sin_cos`` and square
roots (identities, not approximations) so that the Numba kernels vectorise.
"""

from __future__ import annotations

import numpy as np

from mbrl_control.models.actuation import drive_acceleration, steering_servo
from mbrl_control.models.motion_model import MotionModel, Quantity

SINGLE_TRACK_STATES = (
    Quantity("x", "m", "position of the centre of gravity, world x"),
    Quantity("y", "m", "position of the centre of gravity, world y"),
    Quantity("steer", "rad", "front wheel steering angle"),
    Quantity("v", "m/s", "speed of the centre of gravity (signed)"),
    Quantity("yaw", "rad", "heading (not wrapped)"),
    Quantity("yaw_rate", "rad/s", "yaw rate"),
    Quantity("slip", "rad", "side-slip angle at the centre of gravity"),
)
SINGLE_TRACK_CONTROLS = (
    Quantity("steer_cmd", "rad", "commanded steering angle (the servo tracks it)"),
    Quantity("accel", "m/s^2", "commanded longitudinal acceleration"),
)
SINGLE_TRACK_PARAMS = (
    "friction_coeff", "cornering_stiffness_front", "cornering_stiffness_rear", "lf_m", "lr_m", "cg_height_m",
    "mass_kg", "yaw_inertia_kgm2", "steer_min_rad", "steer_max_rad", "steer_rate_max_radps", "accel_max_mps2",
    "v_min_mps", "v_max_mps", "v_switch_mps", "width_m", "length_m", "steer_time_constant_s", "drag_coeff_per_m",
    "kinematic_blend_low_mps", "kinematic_blend_high_mps",
)
"""The fields of :class:`mbrl_control.config.VehicleParams`, in its order."""


def kinematic_terms(m, steer, v, yaw, slip, sv, a, p):
    """(dx, dy, dyaw, dyaw_rate, dslip) of the kinematic model at the centre of gravity."""
    inv_lwb = 1.0 / (p.lf_m + p.lr_m)
    s_st, c_st = m.sin_cos(steer)
    inv_c = 1.0 / c_st
    tan_d = s_st * inv_c
    inv_cos2 = inv_c * inv_c
    ratio = p.lr_m * inv_lwb
    tr = tan_d * ratio
    c_sk = 1.0 / m.sqrt(1.0 + tr * tr)  # cos(atan(tr)): the kinematic slip angle
    s_sk = tr * c_sk  # sin(atan(tr))
    s_y, c_y = m.sin_cos(yaw)
    s_sl, c_sl = m.sin_cos(slip)
    dslip = ratio * sv * inv_cos2 * (c_sk * c_sk)  # ratio * sv / (cos^2(steer) * (1 + tr^2))
    dyaw_rate = (a * c_sl * tan_d - v * s_sl * dslip * tan_d + v * c_sl * sv * inv_cos2) * inv_lwb
    dx = v * (c_y * c_sk - s_y * s_sk)
    dy = v * (s_y * c_sk + c_y * s_sk)
    dyaw = v * c_sk * tan_d * inv_lwb
    return dx, dy, dyaw, dyaw_rate, dslip


def single_track_bounds(params) -> tuple[np.ndarray, np.ndarray]:
    """Steering command within the steering limits, acceleration within +-a_max."""
    return (np.array([params.steer_min_rad, -params.accel_max_mps2]),
            np.array([params.steer_max_rad, params.accel_max_mps2]))


def single_track_safe_stop(state, params) -> np.ndarray:
    """Hold the steering angle, brake at the limit towards standstill (none once stopped)."""
    steer = float(np.clip(state[2], params.steer_min_rad, params.steer_max_rad))
    v = float(state[3])
    return np.array([steer, -np.sign(v) * params.accel_max_mps2 if abs(v) > 0.05 else 0.0])


class KinematicBicycleModel(MotionModel):
    """Kinematic single-track model with the servo and drive limits of :mod:`.actuation`."""

    name = "kinematic"
    states = SINGLE_TRACK_STATES
    controls = SINGLE_TRACK_CONTROLS
    param_names = SINGLE_TRACK_PARAMS
    residual_inputs = ("steer", "v", "yaw_rate", "slip")
    residual_outputs = ("v", "yaw_rate", "slip")

    @staticmethod
    def derivative(m, x, u, p):
        steer, v, yaw, slip = x.steer, x.v, x.yaw, x.slip
        sv = steering_servo(m, steer, u.steer_cmd, p)
        a, dv = drive_acceleration(m, v, u.accel, p)
        dx, dy, dyaw, dyaw_rate, dslip = kinematic_terms(m, steer, v, yaw, slip, sv, a, p)
        return dx, dy, sv, dv, dyaw, dyaw_rate, dslip

    control_bounds = classmethod(lambda cls, params: single_track_bounds(params))
    safe_stop = classmethod(lambda cls, state, params: single_track_safe_stop(state, params))
