"""Exact first and second derivatives of the models and costs, for iLQR/DDP and the NMPC.

The car models are not written here: :func:`single_track_derivative` evaluates the one written
definition of a model kind (:data:`MODEL_DEFINITIONS`: :mod:`.kinematic_bicycle`,
:mod:`.single_track`) over the CasADi backend of :mod:`mbrl_control.ops`. Next to it are the
CasADi expressions of the costs the iLQR kernels need (the PROBLEM.md bicycle-track step and
cost, the smooth racing cost). :func:`ilqr_kernel_functions` lists every CasADi function of
them (value, Jacobian wrt ``w = (s, u)``, multiplier-weighted Hessian ``sum_i lam_i d2f_i/dw2``)
that :mod:`mbrl_control.kernels.casadi_codegen` translates into Numba kernels: generated at
first use into the cache folder, never checked in. The RK4 / substep discretisation and the
residual MLP are differentiated exactly in :mod:`mbrl_control.kernels.ilqr_vehicle` on top of
these continuous-time derivatives.

:func:`autograd_step_derivatives` is an independent second implementation (torch autograd on
the torch models themselves, residual included) that the tests compare against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from mbrl_control.config import VehicleParams
from mbrl_control.models.kinematic_bicycle import SINGLE_TRACK_PARAMS, KinematicBicycleModel
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S, U
from mbrl_control.models.motion_model import MotionModel, casadi_derivative, symbolic_params
from mbrl_control.models.single_track import DynamicSingleTrackModel

MODEL_DEFINITIONS: dict[str, type[MotionModel]] = {"dynamic": DynamicSingleTrackModel,
                                                   "kinematic": KinematicBicycleModel}
"""Model kind (as the controllers and kernels name it) -> its one written definition."""
MODEL_KINDS: tuple[str, ...] = tuple(MODEL_DEFINITIONS)

PARAM_NAMES: tuple[str, ...] = SINGLE_TRACK_PARAMS
"""Order of the vehicle parameter vector ``p`` every generated kernel takes (VehicleParams' field order)."""


def param_vector(params: VehicleParams) -> np.ndarray:
    """The parameter vector (float64, ``PARAM_NAMES`` order) for the generated kernels."""
    return np.array([getattr(params, n) for n in PARAM_NAMES], dtype=np.float64)


def param_vector_of_model(model) -> np.ndarray:
    """Parameter vector read from a torch single-track model's buffers (sysid may have changed them)."""
    return np.array([float(getattr(model, n)) for n in PARAM_NAMES], dtype=np.float64)


def _ca():
    import casadi as ca

    return ca


def model_definition(kind: str) -> type[MotionModel]:
    """The definition of model ``kind`` ('dynamic' | 'kinematic')."""
    try:
        return MODEL_DEFINITIONS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r} (choose from {', '.join(MODEL_KINDS)})") from None


def single_track_derivative(kind: str, s, u, p):
    """``ds/dt`` of model ``kind`` as a CasADi column vector, from its one written definition.

    ``s`` (7), ``u`` (2) are CasADi vectors; ``p`` gives the parameters as a mapping name -> value,
    an object with them as attributes (e.g. VehicleParams), or a vector in ``PARAM_NAMES`` order
    (numbers or CasADi expressions).
    """
    if isinstance(p, Mapping):
        p = SimpleNamespace(**p)
    elif not hasattr(p, PARAM_NAMES[0]):
        p = symbolic_params(PARAM_NAMES, p)
    return casadi_derivative(model_definition(kind), s, u, p)


def bicycle_track_step(x, u):
    """PROBLEM.md 4-state kinematic bicycle, one explicit Euler step: x=(px,py,yaw,v), u=(a,delta)."""
    from mbrl_control.models import bicycle_track_spec as bt

    ca = _ca()
    px, py, yaw, v = x[bt.PX], x[bt.PY], x[bt.YAW], x[bt.V]
    a, delta = u[bt.ACC], u[bt.STEER]
    beta = ca.atan(bt.LR_M / bt.WHEELBASE_M * ca.tan(delta))
    return ca.vertcat(px + bt.DT_S * v * ca.cos(yaw + beta), py + bt.DT_S * v * ca.sin(yaw + beta),
                      yaw + bt.DT_S * v / bt.LR_M * ca.sin(beta), v + bt.DT_S * a)


def bicycle_track_state_cost(x):
    """State part of the PROBLEM.md stage cost: 10 d^2 + (v-3)^2 + 2 (1 - cos(yaw - psi)), wrap-safe form."""
    from mbrl_control.models import bicycle_track_spec as bt

    ca = _ca()
    px, py, yaw, v = x[bt.PX], x[bt.PY], x[bt.YAW], x[bt.V]
    r = ca.sqrt(px * px + py * py)
    d = r - bt.RADIUS_M
    return (bt.W_DIST * d * d + bt.W_SPEED * (v - bt.V_REF_MPS) ** 2
            + bt.W_HEADING * (1.0 - (ca.sin(yaw) * px - ca.cos(yaw) * py) / r))


# --------------------------------------------------------------------------- smooth racing cost
REF_FIELDS = ("cx", "cy", "tx", "ty", "kappa", "bound_left", "bound_right", "v_max")
"""Per-step frozen reference: centerline point, unit tangent, curvature, usable half widths, speed cap."""
WEIGHT_FIELDS = ("progress", "lateral", "lag", "bound", "lat_accel", "lat_accel_max", "speed_cap", "steer",
                 "accel", "servo", "dt", "slip", "reverse", "eps_bound", "eps_speed", "eps_lat_accel")
"""Racing cost weights (see :func:`racing_state_cost`); ``dt`` scales the progress reward to metres."""


def smooth_hinge_sq(r, eps):
    """``(0.5 (r + sqrt(r^2 + eps^2)))^2``: the smooth, convex version of ``max(r, 0)^2``.

    Equal to it up to ``O(eps^2)``, but with curvature already a few ``eps`` before the limit,
    so a quadratic model sees a penalty coming instead of stepping far past its kink.
    """
    ca = _ca()
    h = 0.5 * (r + ca.sqrt(r * r + eps * eps))
    return h * h


def racing_state_cost(x, ref, w):
    """Smooth racing cost of a state against a frozen reference point (contouring / lag form).

    ``e_c = n.(p - c)``, ``e_l = t.(p - c)`` with ``n`` the left normal; progress rate along the
    path ``v cos(yaw + slip - psi) / (1 - kappa e_c)``; smooth one-sided quadratic penalties
    (:func:`smooth_hinge_sq`) beyond the usable half widths, the lateral-acceleration limit
    ``|v r| <= a_lat_max``, the speed cap and for reversing. The weights are those of the MPPI
    racing cost (``control/costs.py``), mapped in :meth:`mbrl_control.control.ilqr.ILQRConfig.weight_vector`.
    """
    ca = _ca()
    r = {k: ref[i] for i, k in enumerate(REF_FIELDS)}
    q = {k: w[i] for i, k in enumerate(WEIGHT_FIELDS)}
    dx, dy = x[S.X] - r["cx"], x[S.Y] - r["cy"]
    e_c = -r["ty"] * dx + r["tx"] * dy
    e_l = r["tx"] * dx + r["ty"] * dy
    heading = x[S.YAW] + x[S.SLIP]
    v_along = x[S.V] * (ca.cos(heading) * r["tx"] + ca.sin(heading) * r["ty"])
    scale = ca.fmax(1.0 - r["kappa"] * e_c, 0.25)
    bound = (smooth_hinge_sq(e_c - r["bound_left"], q["eps_bound"])
             + smooth_hinge_sq(-e_c - r["bound_right"], q["eps_bound"]))
    a_lat = x[S.V] * x[S.YAW_RATE]
    over_lat = (smooth_hinge_sq(a_lat - q["lat_accel_max"], q["eps_lat_accel"])
                + smooth_hinge_sq(-a_lat - q["lat_accel_max"], q["eps_lat_accel"]))
    over_speed = smooth_hinge_sq(x[S.V] - r["v_max"], q["eps_speed"])
    reverse = smooth_hinge_sq(-x[S.V], q["eps_speed"])
    return (-q["progress"] * q["dt"] * v_along / scale + q["lateral"] * e_c * e_c + q["lag"] * e_l * e_l
            + q["bound"] * bound + q["lat_accel"] * over_lat + q["speed_cap"] * over_speed
            + q["slip"] * x[S.SLIP] * x[S.SLIP] + q["reverse"] * reverse)


def racing_stage_cost(x, u, ref, w):
    """:func:`racing_state_cost` plus control effort and the servo term ``(steer_cmd - steer)^2``."""
    q = {k: w[i] for i, k in enumerate(WEIGHT_FIELDS)}
    servo = u[U.STEER_CMD] - x[S.STEER]
    return (racing_state_cost(x, ref, w) + q["steer"] * u[U.STEER_CMD] ** 2 + q["accel"] * u[U.ACCEL] ** 2
            + q["servo"] * servo * servo)


# --------------------------------------------------------------------------- what the kernels compile
@dataclass(frozen=True)
class KernelFunction:
    """A CasADi function that becomes one generated Numba kernel ``name(*input_names, *output_names)``."""

    function: Any  # casadi.Function; its name is the kernel's name
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


def _derivative_kernels(name: str, expr, w, inputs: list, input_names: tuple[str, ...]) -> list[KernelFunction]:
    """``<name>_f``, ``_jac`` (wrt ``w``), ``_fjac`` (both) and ``_hess`` (multiplier-weighted,
    the multipliers ``lam`` after the first two inputs) of the vector expression ``expr``."""
    ca = _ca()
    lam = ca.SX.sym("lam", expr.shape[0])
    jac = ca.jacobian(expr, w)
    hess, _ = ca.hessian(ca.dot(lam, expr), w)
    h_inputs, h_names = [*inputs[:2], lam, *inputs[2:]], (*input_names[:2], "lam", *input_names[2:])

    def kernel(suffix: str, ins: list, names: tuple[str, ...], outs: list, out_names: tuple[str, ...]):
        return KernelFunction(ca.Function(f"{name}_{suffix}", ins, outs), names, out_names)

    return [kernel("f", inputs, input_names, [expr], ("out",)),
            kernel("jac", inputs, input_names, [jac], ("out",)),
            kernel("fjac", inputs, input_names, [expr, jac], ("out_f", "out_jac")),
            kernel("hess", h_inputs, h_names, [hess], ("out",))]


def ilqr_kernel_functions() -> list[KernelFunction]:
    """Every CasADi function the iLQR kernels call, in the order of the generated module.

    ``st_<kind>_{f,jac,fjac,hess}(z, u, [lam,] p, ...)``: the continuous-time derivative of each
    model kind, its Jacobian wrt (z, u) (7x9), both, the multiplier-weighted Hessian (9x9);
    ``bt_step_*`` / ``bt_cost_*``: the PROBLEM.md bicycle step (4 states, 2 controls) and state
    cost; ``rc_stage_*(x, u, ref, w, ...)`` / ``rc_final_*(x, ref, w, ...)``: the smooth racing
    cost's value, gradient and Hessian.
    """
    ca = _ca()
    out: list[KernelFunction] = []
    s, u, p = ca.SX.sym("s", STATE_DIM), ca.SX.sym("u", CONTROL_DIM), ca.SX.sym("p", len(PARAM_NAMES))
    for kind in MODEL_KINDS:
        expr = single_track_derivative(kind, s, u, p)
        out += _derivative_kernels(f"st_{kind}", expr, ca.vertcat(s, u), [s, u, p], ("z", "u", "p"))
    x4, u2 = ca.SX.sym("x", 4), ca.SX.sym("u", 2)
    out += _derivative_kernels("bt_step", bicycle_track_step(x4, u2), ca.vertcat(x4, u2), [x4, u2], ("x", "u"))
    q = bicycle_track_state_cost(x4)
    for fname, expr in (("bt_cost_value", q), ("bt_cost_grad", ca.jacobian(q, x4).T),
                        ("bt_cost_hess", ca.hessian(q, x4)[0])):
        out.append(KernelFunction(ca.Function(fname, [x4], [expr]), ("x",), ("out",)))
    xs, us = ca.SX.sym("x", STATE_DIM), ca.SX.sym("u", CONTROL_DIM)
    ref, wts = ca.SX.sym("ref", len(REF_FIELDS)), ca.SX.sym("w", len(WEIGHT_FIELDS))
    xu = ca.vertcat(xs, us)
    c = racing_stage_cost(xs, us, ref, wts)
    cf = racing_state_cost(xs, ref, wts)
    stage, final = ([xs, us, ref, wts], ("x", "u", "ref", "w")), ([xs, ref, wts], ("x", "ref", "w"))
    for fname, (ins, names), outs in (
            ("rc_stage_value", stage, [c]),
            ("rc_stage_grad", stage, [ca.jacobian(c, xu).T]),
            ("rc_stage_hess", stage, [ca.hessian(c, xu)[0]]),
            ("rc_stage_derivs", stage, [ca.jacobian(c, xu).T, ca.hessian(c, xu)[0]]),
            ("rc_final_value", final, [cf]),
            ("rc_final_grad", final, [ca.jacobian(cf, xs).T]),
            ("rc_final_hess", final, [ca.hessian(cf, xs)[0]])):
        out_names = ("out",) if len(outs) == 1 else tuple(f"out{i}" for i in range(len(outs)))
        out.append(KernelFunction(ca.Function(fname, ins, outs), names, out_names))
    return out


# --------------------------------------------------------------------------- numpy-facing API
def casadi_function(kind: str, params: VehicleParams):
    """A CasADi ``Function('f', [s, u], [ds/dt])`` of model ``kind`` with numeric parameters."""
    ca = _ca()
    s, u = ca.SX.sym("s", STATE_DIM), ca.SX.sym("u", CONTROL_DIM)
    return ca.Function("f", [s, u], [single_track_derivative(kind, s, u, params)])


def autograd_step_derivatives(model, state: np.ndarray, control: np.ndarray, lam: np.ndarray | None = None):
    """(F, dF/ds, dF/du, sum_i lam_i d2F_i/dw2) of one ``model.forward`` step by torch autograd (float64).

    The independent reference for the Numba derivatives: works on any torch ``DynamicsModel``,
    including a semi-parametric one with its residual MLP.
    """
    import torch

    m = _as_float64(model)
    w0 = torch.as_tensor(np.concatenate([state, control]), dtype=torch.float64)
    n = STATE_DIM

    def step(w):
        return m(w[:n], w[n:])

    with torch.enable_grad():
        value = step(w0).detach().numpy()
        jac = torch.autograd.functional.jacobian(step, w0).numpy()
        hess = None
        if lam is not None:
            lam_t = torch.as_tensor(lam, dtype=torch.float64)
            hess = torch.autograd.functional.hessian(lambda w: torch.dot(lam_t, step(w)), w0).numpy()
    return value, jac[:, :n], jac[:, n:], hess


def _as_float64(model):
    import copy

    import torch

    m = copy.deepcopy(model)
    return m.to(torch.float64)
