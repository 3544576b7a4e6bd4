"""Dynamic single-track model with linear tires and load transfer (f1tenth_gym ``st``).

The one written definition (CommonRoad, Althoff et al., "CommonRoad: Vehicle Models", with the
steering servo and drag of :mod:`.actuation`): the torch module
:class:`mbrl_control.models.bicycle.DynamicSingleTrack`, CasADi, the iLQR/DDP derivatives and
the fused kernels derive from :meth:`DynamicSingleTrackModel.derivative`. Below
``kinematic_blend_low_mps`` it is exactly the kinematic model (:mod:`.kinematic_bicycle`) at the
centre of gravity (the f1tenth_gym switch); up to ``kinematic_blend_high_mps`` the two are
blended with a smoothstep so that derivatives exist everywhere.
"""

from __future__ import annotations

from mbrl_control.models.actuation import drive_acceleration, steering_servo
from mbrl_control.models.kinematic_bicycle import (SINGLE_TRACK_CONTROLS, SINGLE_TRACK_PARAMS, SINGLE_TRACK_STATES,
                                                   kinematic_terms, single_track_bounds, single_track_safe_stop)
from mbrl_control.models.motion_model import MotionModel

GRAVITY_MPS2 = 9.81


def tire_terms(m, steer, v, yaw, yaw_rate, slip, a, p):
    """(dx, dy, dyaw, dyaw_rate, dslip) of the linear tire model; |v| kept above the blend's
    low threshold for the 1/v terms (where the weight of these terms is 0 anyway)."""
    lf, lr = p.lf_m, p.lr_m
    inv_lwb = 1.0 / (lf + lr)
    v_low = p.kinematic_blend_low_mps
    inv_vd = 1.0 / m.select(v >= 0.0, m.max(v, v_low), m.min(v, -v_low))
    mu, csf, csr, h = p.friction_coeff, p.cornering_stiffness_front, p.cornering_stiffness_rear, p.cg_height_m
    load_f = GRAVITY_MPS2 * lr - a * h
    load_r = GRAVITY_MPS2 * lf + a * h
    k = mu * p.mass_kg / (p.yaw_inertia_kgm2 * (lf + lr))
    mu_lwb = mu * inv_lwb
    dyaw_rate = (-k * inv_vd * (lf * lf * csf * load_f + lr * lr * csr * load_r) * yaw_rate
                 + k * (lr * csr * load_r - lf * csf * load_f) * slip
                 + k * lf * csf * load_f * steer)
    dslip = ((mu_lwb * inv_vd * inv_vd * (csr * load_r * lr - csf * load_f * lf) - 1.0) * yaw_rate
             - mu_lwb * inv_vd * (csr * load_r + csf * load_f) * slip
             + mu_lwb * inv_vd * csf * load_f * steer)
    s_y, c_y = m.sin_cos(yaw)
    s_sl, c_sl = m.sin_cos(slip)
    return v * (c_y * c_sl - s_y * s_sl), v * (s_y * c_sl + c_y * s_sl), yaw_rate, dyaw_rate, dslip


def kinematic_weight(m, v, p):
    """Weight of the tire model: 0 below the low blend speed, 1 above the high one, smoothstep between;
    0 when reversing: the linear tire model's yaw and slip damping turn negative for ``v < 0`` (its
    solution grows without bound: a plant reversing at 1.3 m/s reached 1e8 rad/s in 0.2 s), and a
    car backs up slowly, where the kinematic model holds."""
    v_low = p.kinematic_blend_low_mps
    t = m.clip((v - v_low) * (1.0 / (p.kinematic_blend_high_mps - v_low)), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def single_track_rates(m, x, sv, a, dv, p):
    """``dx/dt`` of the chassis for the actuators' steering rate ``sv``, achieved acceleration ``a``
    and speed rate ``dv`` (``a`` less drag): the tire model blended with the kinematic one."""
    steer, v, yaw, yaw_rate, slip = x.steer, x.v, x.yaw, x.yaw_rate, x.slip
    kin = kinematic_terms(m, steer, v, yaw, slip, sv, a, p)
    dyn = tire_terms(m, steer, v, yaw, yaw_rate, slip, a, p)
    w = kinematic_weight(m, v, p)
    wk = 1.0 - w
    return (w * dyn[0] + wk * kin[0], w * dyn[1] + wk * kin[1], sv, dv, w * dyn[2] + wk * kin[2],
            w * dyn[3] + wk * kin[3], w * dyn[4] + wk * kin[4])


class DynamicSingleTrackModel(MotionModel):
    """Dynamic single-track model, kinematic at low speed (same layout, servo, limits)."""

    name = "dynamic"
    states = SINGLE_TRACK_STATES
    controls = SINGLE_TRACK_CONTROLS
    param_names = SINGLE_TRACK_PARAMS
    residual_inputs = ("steer", "v", "yaw_rate", "slip")
    residual_outputs = ("v", "yaw_rate", "slip")

    @staticmethod
    def derivative(m, x, u, p):
        sv = steering_servo(m, x.steer, u.steer_cmd, p)
        a, dv = drive_acceleration(m, x.v, u.accel, p)
        return single_track_rates(m, x, sv, a, dv, p)

    control_bounds = classmethod(lambda cls, params: single_track_bounds(params))
    safe_stop = classmethod(lambda cls, state, params: single_track_safe_stop(state, params))
