"""Scalar kernel mirror of the torch single-track models (:mod:`mbrl_control.models.bicycle`).

The state travels as seven float32 scalars and the parameters as a float32 array (or a tuple
read from it), so the same functions compile inside the vectorised Numba CPU loop and inside
a CUDA thread, and a new parameter set (online system identification) is a new array, not a
recompilation. One function, :func:`derivative`, implements both models: the dynamic
single-track model blends its tire model with the kinematic model by the smoothstep weight
of :meth:`DynamicSingleTrack.blend_weight`; with ``P_DYNAMIC = 0`` the weight is 0 and the
result is :class:`KinematicBicycle` exactly. ``tan``, ``atan`` and the trigonometry of sums
are rewritten with ``sin_cos`` and square roots (identities, not approximations) so that no
libm call breaks vectorisation. Tested equal to the torch models in float32.
"""

from __future__ import annotations

import numpy as np

from mbrl_control.config import VehicleParams
from mbrl_control.kernels.fastmath import HALF, ONE, TWO, ZERO, clip32, device_function, select, sin_cos, tanh32
from mbrl_control.models.bicycle import GRAVITY_MPS2

F32 = np.float32
_THREE = F32(3.0)
_SIXTH = F32(1.0 / 6.0)

# parameter array layout
(P_MU, P_CSF, P_CSR, P_LF, P_LR, P_H, P_M, P_IZ, P_SMIN, P_SMAX, P_SVMAX, P_AMAX, P_VMIN, P_VMAX, P_VSW, P_TAU,
 P_DRAG, P_BLO, P_BHI, P_LWB, P_DYNAMIC, P_G) = range(22)
N_PARAMS = 22

MODEL_KINDS = ("kinematic", "dynamic")
INTEGRATORS = ("euler", "rk4")


def pack_params(params: VehicleParams, kind: str) -> np.ndarray:
    """The float32 parameter array the kernels read, for ``kind`` 'kinematic' or 'dynamic'."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown single-track model kind {kind!r}")
    p = np.zeros(N_PARAMS, dtype=np.float32)
    p[P_MU], p[P_CSF], p[P_CSR] = params.friction_coeff, params.cornering_stiffness_front, params.cornering_stiffness_rear
    p[P_LF], p[P_LR], p[P_H] = params.lf_m, params.lr_m, params.cg_height_m
    p[P_M], p[P_IZ] = params.mass_kg, params.yaw_inertia_kgm2
    p[P_SMIN], p[P_SMAX], p[P_SVMAX] = params.steer_min_rad, params.steer_max_rad, params.steer_rate_max_radps
    p[P_AMAX], p[P_VMIN], p[P_VMAX], p[P_VSW] = params.accel_max_mps2, params.v_min_mps, params.v_max_mps, params.v_switch_mps
    p[P_TAU], p[P_DRAG] = params.steer_time_constant_s, params.drag_coeff_per_m
    p[P_BLO], p[P_BHI] = params.kinematic_blend_low_mps, params.kinematic_blend_high_mps
    # the torch models add lf + lr in the model dtype: do the same in float32
    p[P_LWB] = np.float32(params.lf_m) + np.float32(params.lr_m)
    p[P_DYNAMIC] = 1.0 if kind == "dynamic" else 0.0
    p[P_G] = GRAVITY_MPS2
    return p


@device_function
def load_params(p):
    """The parameter array as a tuple of scalars (hoisted out of vectorised loops: no memory aliasing)."""
    return (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15],
            p[16], p[17], p[18], p[19], p[20], p[21])


@device_function
def actuators(steer, v, steer_cmd, accel_cmd, p):
    """(steering rate, constrained acceleration, dv/dt with drag): SingleTrackBase.actuators."""
    cmd = clip32(steer_cmd, p[P_SMIN], p[P_SMAX])
    sv_max = p[P_SVMAX]
    rate = sv_max * tanh32((cmd - steer) * (ONE / (p[P_TAU] * sv_max)))
    blocked = ((steer <= p[P_SMIN]) & (rate < ZERO)) | ((steer >= p[P_SMAX]) & (rate > ZERO))
    sv = ZERO if blocked else rate
    a_max = p[P_AMAX]
    pos_limit = a_max * p[P_VSW] / max(v, p[P_VSW])
    a = min(max(accel_cmd, -a_max), pos_limit)
    stopped = ((v <= p[P_VMIN]) & (a <= ZERO)) | ((v >= p[P_VMAX]) & (a >= ZERO))
    a = ZERO if stopped else a
    return sv, a, a - p[P_DRAG] * v * abs(v)


@device_function(inline="always")
def derivative(steer, v, yaw, yaw_rate, slip, steer_cmd, accel_cmd, p):
    """ds/dt as a 7-tuple (X, Y, STEER, V, YAW, YAW_RATE, SLIP order) of the single-track model.

    Divisions by parameters are written as products with their reciprocals (computed once per
    kernel call, outside the vectorised loops) and each per-sample divisor is inverted once:
    the same expressions as the torch model up to float32 rounding, with 5 instead of 12
    vector divisions.
    """
    sv, a, dv = actuators(steer, v, steer_cmd, accel_cmd, p)
    lf, lr, lwb = p[P_LF], p[P_LR], p[P_LWB]
    inv_lwb = ONE / lwb
    # kinematic model at the centre of gravity
    s_st, c_st = sin_cos(steer)
    inv_c = ONE / c_st
    tan_d = s_st * inv_c
    inv_cos2 = inv_c * inv_c
    ratio = lr * inv_lwb
    tr = tan_d * ratio
    c_sk = ONE / np.sqrt(ONE + tr * tr)  # cos(atan(tr))
    s_sk = tr * c_sk  # sin(atan(tr))
    s_y, c_y = sin_cos(yaw)
    s_sl, c_sl = sin_cos(slip)
    k_dslip = ratio * sv * inv_cos2 * (c_sk * c_sk)  # ratio * sv / (cos^2(steer) * (1 + tr^2))
    k_dyaw_rate = (a * c_sl * tan_d - v * s_sl * k_dslip * tan_d + v * c_sl * sv * inv_cos2) * inv_lwb
    k_dx = v * (c_y * c_sk - s_y * s_sk)
    k_dy = v * (s_y * c_sk + c_y * s_sk)
    k_dyaw = v * c_sk * tan_d * inv_lwb
    # dynamic model (linear tires, load transfer)
    v_low = p[P_BLO]
    v_d = select(v >= ZERO, max(v, v_low), min(v, -v_low))
    inv_vd = ONE / v_d
    mu, m, iz, h = p[P_MU], p[P_M], p[P_IZ], p[P_H]
    csf, csr, g = p[P_CSF], p[P_CSR], p[P_G]
    load_f = g * lr - a * h
    load_r = g * lf + a * h
    k = mu * m / (iz * lwb)
    mu_lwb = mu * inv_lwb
    d_dyaw_rate = (-k * inv_vd * (lf * lf * csf * load_f + lr * lr * csr * load_r) * yaw_rate
                   + k * (lr * csr * load_r - lf * csf * load_f) * slip
                   + k * lf * csf * load_f * steer)
    d_dslip = ((mu_lwb * inv_vd * inv_vd * (csr * load_r * lr - csf * load_f * lf) - ONE) * yaw_rate
               - mu_lwb * inv_vd * (csr * load_r + csf * load_f) * slip
               + mu_lwb * inv_vd * csf * load_f * steer)
    d_dx = v * (c_y * c_sl - s_y * s_sl)
    d_dy = v * (s_y * c_sl + c_y * s_sl)
    # smoothstep blend (0: kinematic)
    t = clip32((abs(v) - v_low) * (ONE / (p[P_BHI] - v_low)), ZERO, ONE)
    w = t * t * (_THREE - TWO * t) * p[P_DYNAMIC]
    wk = ONE - w
    return (w * d_dx + wk * k_dx, w * d_dy + wk * k_dy, sv, dv, w * yaw_rate + wk * k_dyaw,
            w * d_dyaw_rate + wk * k_dyaw_rate, w * d_dslip + wk * k_dslip)


@device_function(inline="always")
def rk4_step(x, y, steer, v, yaw, yaw_rate, slip, steer_cmd, accel_cmd, h, p):
    """One classical RK4 step of size ``h`` (models.base.integrate_step), control held."""
    k1 = derivative(steer, v, yaw, yaw_rate, slip, steer_cmd, accel_cmd, p)
    hh = HALF * h
    k2 = derivative(steer + hh * k1[2], v + hh * k1[3], yaw + hh * k1[4], yaw_rate + hh * k1[5], slip + hh * k1[6],
                    steer_cmd, accel_cmd, p)
    k3 = derivative(steer + hh * k2[2], v + hh * k2[3], yaw + hh * k2[4], yaw_rate + hh * k2[5], slip + hh * k2[6],
                    steer_cmd, accel_cmd, p)
    k4 = derivative(steer + h * k3[2], v + h * k3[3], yaw + h * k3[4], yaw_rate + h * k3[5], slip + h * k3[6],
                    steer_cmd, accel_cmd, p)
    h6 = h * _SIXTH
    return (x + h6 * (k1[0] + TWO * k2[0] + TWO * k3[0] + k4[0]),
            y + h6 * (k1[1] + TWO * k2[1] + TWO * k3[1] + k4[1]),
            steer + h6 * (k1[2] + TWO * k2[2] + TWO * k3[2] + k4[2]),
            v + h6 * (k1[3] + TWO * k2[3] + TWO * k3[3] + k4[3]),
            yaw + h6 * (k1[4] + TWO * k2[4] + TWO * k3[4] + k4[4]),
            yaw_rate + h6 * (k1[5] + TWO * k2[5] + TWO * k3[5] + k4[5]),
            slip + h6 * (k1[6] + TWO * k2[6] + TWO * k3[6] + k4[6]))


@device_function(inline="always")
def euler_step(x, y, steer, v, yaw, yaw_rate, slip, steer_cmd, accel_cmd, h, p):
    """One forward-Euler step of size ``h``."""
    k1 = derivative(steer, v, yaw, yaw_rate, slip, steer_cmd, accel_cmd, p)
    return (x + h * k1[0], y + h * k1[1], steer + h * k1[2], v + h * k1[3], yaw + h * k1[4],
            yaw_rate + h * k1[5], slip + h * k1[6])
