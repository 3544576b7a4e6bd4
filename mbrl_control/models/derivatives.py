"""Exact first and second derivatives of the models, for iLQR/DDP and the NMPC.

How: the models are written once more in CasADi symbolics (:func:`single_track_derivative`
mirrors :mod:`mbrl_control.models.bicycle` line by line; :func:`bicycle_track_step` is the
4-state model of ``../shared/bench/PROBLEM.md``). CasADi's algorithmic differentiation gives
the Jacobian and the multiplier-weighted Hessian ``sum_i lam_i d2f_i/dw2`` (``w = (s, u)``), and
:func:`sx_to_numba_source` translates each CasADi SX function (its straight-line instruction
list) into a Numba function of scalar temporaries. The translated functions are written to
``mbrl_control/kernels/ilqr_generated.py`` by ``python -m mbrl_control.models.derivatives``
(checked in; ``test_derivatives.py`` checks it against fresh CasADi evaluations). The RK4 /
substep discretisation and the residual MLP are differentiated exactly in
:mod:`mbrl_control.kernels.ilqr_vehicle` on top of these continuous-time derivatives.

:func:`autograd_step_derivatives` is an independent second implementation (torch autograd on
the torch models themselves, residual included) that the tests compare against.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

from mbrl_control.config import VehicleParams
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S, U

PARAM_NAMES: tuple[str, ...] = tuple(f.name for f in fields(VehicleParams))
"""Order of the vehicle parameter vector ``p`` every generated kernel takes."""

GRAVITY_MPS2 = 9.81
MODEL_KINDS = ("dynamic", "kinematic")



def param_vector(params: VehicleParams) -> np.ndarray:
    """The parameter vector (float64, ``PARAM_NAMES`` order) for the generated kernels."""
    return np.array([getattr(params, n) for n in PARAM_NAMES], dtype=np.float64)


def param_vector_of_model(model) -> np.ndarray:
    """Parameter vector read from a torch single-track model's buffers (sysid may have changed them)."""
    return np.array([float(getattr(model, n)) for n in PARAM_NAMES], dtype=np.float64)


# --------------------------------------------------------------------------- CasADi mirror
def _ca():
    import casadi as ca

    return ca


def single_track_derivative(kind: str, s, u, p):
    """``ds/dt`` of the torch ``DynamicSingleTrack`` / ``KinematicBicycle`` in CasADi symbolics.

    ``s`` (7), ``u`` (2) are CasADi vectors; ``p`` maps every name of ``PARAM_NAMES`` to a number
    or expression. Same equations, same branches (``torch.where`` -> ``if_else``, clamp ->
    ``fmin``/``fmax``) as :mod:`mbrl_control.models.bicycle`.
    """
    ca = _ca()
    steer, v, yaw, yaw_rate, slip = s[S.STEER], s[S.V], s[S.YAW], s[S.YAW_RATE], s[S.SLIP]
    # actuators
    cmd = ca.fmin(ca.fmax(u[U.STEER_CMD], p["steer_min_rad"]), p["steer_max_rad"])
    sv_max = p["steer_rate_max_radps"]
    rate = sv_max * ca.tanh((cmd - steer) / (p["steer_time_constant_s"] * sv_max))
    blocked = ca.logic_or(ca.logic_and(steer <= p["steer_min_rad"], rate < 0),
                          ca.logic_and(steer >= p["steer_max_rad"], rate > 0))
    sv = ca.if_else(blocked, 0.0, rate)
    a_max = p["accel_max_mps2"]
    pos_limit = a_max * p["v_switch_mps"] / ca.fmax(v, p["v_switch_mps"])
    a = ca.fmin(ca.fmax(u[U.ACCEL], -a_max), pos_limit)
    stopped = ca.logic_or(ca.logic_and(v <= p["v_min_mps"], a <= 0), ca.logic_and(v >= p["v_max_mps"], a >= 0))
    a = ca.if_else(stopped, 0.0, a)
    dv = a - p["drag_coeff_per_m"] * v * ca.fabs(v)
    # kinematic terms at the centre of gravity
    lf, lr = p["lf_m"], p["lr_m"]
    lwb = lf + lr
    tan_d = ca.tan(steer)
    cos2_d = ca.cos(steer) ** 2
    ratio = lr / lwb
    slip_kin = ca.atan(tan_d * ratio)
    dslip_k = ratio * sv / (cos2_d * (1.0 + (tan_d * ratio) ** 2))
    dyaw_rate_k = (a * ca.cos(slip) * tan_d - v * ca.sin(slip) * dslip_k * tan_d + v * ca.cos(slip) * sv / cos2_d) / lwb
    kin = (v * ca.cos(yaw + slip_kin), v * ca.sin(yaw + slip_kin), v * ca.cos(slip_kin) * tan_d / lwb, dyaw_rate_k, dslip_k)
    if kind == "kinematic":
        parts = kin
    elif kind == "dynamic":
        dyn = _dynamic_terms(ca, s, a, p)
        lo, hi = p["kinematic_blend_low_mps"], p["kinematic_blend_high_mps"]
        t = ca.fmin(ca.fmax((ca.fabs(v) - lo) / (hi - lo), 0.0), 1.0)
        w = t * t * (3.0 - 2.0 * t)
        parts = tuple(w * d + (1.0 - w) * k for d, k in zip(dyn, kin))
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    out = [None] * STATE_DIM
    out[S.X], out[S.Y], out[S.STEER], out[S.V] = parts[0], parts[1], sv, dv
    out[S.YAW], out[S.YAW_RATE], out[S.SLIP] = parts[2], parts[3], parts[4]
    return ca.vertcat(*out)


def _dynamic_terms(ca, s, a, p):
    """Tire-model terms of ``DynamicSingleTrack.dynamic_terms``."""
    steer, v, yaw, yaw_rate, slip = s[S.STEER], s[S.V], s[S.YAW], s[S.YAW_RATE], s[S.SLIP]
    v_low = p["kinematic_blend_low_mps"]
    v_d = ca.if_else(v >= 0, ca.fmax(v, v_low), ca.fmin(v, -v_low))
    mu, m, iz, h = p["friction_coeff"], p["mass_kg"], p["yaw_inertia_kgm2"], p["cg_height_m"]
    lf, lr, csf, csr = p["lf_m"], p["lr_m"], p["cornering_stiffness_front"], p["cornering_stiffness_rear"]
    lwb = lf + lr
    load_f = GRAVITY_MPS2 * lr - a * h
    load_r = GRAVITY_MPS2 * lf + a * h
    k = mu * m / (iz * lwb)
    dyaw_rate = (-k / v_d * (lf * lf * csf * load_f + lr * lr * csr * load_r) * yaw_rate
                 + k * (lr * csr * load_r - lf * csf * load_f) * slip
                 + k * lf * csf * load_f * steer)
    dslip = ((mu / (v_d * v_d * lwb) * (csr * load_r * lr - csf * load_f * lf) - 1.0) * yaw_rate
             - mu / (v_d * lwb) * (csr * load_r + csf * load_f) * slip
             + mu / (v_d * lwb) * csf * load_f * steer)
    return v * ca.cos(yaw + slip), v * ca.sin(yaw + slip), yaw_rate, dyaw_rate, dslip


def symbolic_params(ca, sym):
    """Map ``PARAM_NAMES`` to the entries of a symbolic vector ``sym`` of length 21."""
    return {name: sym[i] for i, name in enumerate(PARAM_NAMES)}


def bicycle_track_step(x, u):
    """PROBLEM.md 4-state kinematic bicycle, one explicit Euler step: x=(px,py,yaw,v), u=(a,delta)."""
    from mbrl_control.control import bicycle_track as bt

    ca = _ca()
    px, py, yaw, v = x[bt.PX], x[bt.PY], x[bt.YAW], x[bt.V]
    a, delta = u[bt.ACC], u[bt.STEER]
    beta = ca.atan(bt.LR_M / bt.WHEELBASE_M * ca.tan(delta))
    return ca.vertcat(px + bt.DT_S * v * ca.cos(yaw + beta), py + bt.DT_S * v * ca.sin(yaw + beta),
                      yaw + bt.DT_S * v / bt.LR_M * ca.sin(beta), v + bt.DT_S * a)


def bicycle_track_state_cost(x):
    """State part of the PROBLEM.md stage cost: 10 d^2 + (v-3)^2 + 2 (1 - cos(yaw - psi)), wrap-safe form."""
    from mbrl_control.control import bicycle_track as bt

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


# --------------------------------------------------------------------------- SX -> Numba
_BINARY = {"OP_ADD": "{0} + {1}", "OP_SUB": "{0} - {1}", "OP_MUL": "{0} * {1}", "OP_DIV": "{0} / {1}",
           "OP_POW": "{0} ** {1}", "OP_CONSTPOW": "{0} ** {1}", "OP_ATAN2": "math.atan2({0}, {1})",
           "OP_FMIN": "min({0}, {1})", "OP_FMAX": "max({0}, {1})", "OP_COPYSIGN": "math.copysign({0}, {1})",
           "OP_HYPOT": "math.hypot({0}, {1})", "OP_FMOD": "math.fmod({0}, {1})",
           "OP_LT": "1.0 if {0} < {1} else 0.0", "OP_LE": "1.0 if {0} <= {1} else 0.0",
           "OP_EQ": "1.0 if {0} == {1} else 0.0", "OP_NE": "1.0 if {0} != {1} else 0.0",
           "OP_AND": "1.0 if ({0} != 0.0 and {1} != 0.0) else 0.0",
           "OP_OR": "1.0 if ({0} != 0.0 or {1} != 0.0) else 0.0",
           "OP_IF_ELSE_ZERO": "{1} if {0} != 0.0 else 0.0"}
_UNARY = {"OP_ASSIGN": "{0}", "OP_NEG": "-{0}", "OP_SQ": "{0} * {0}", "OP_TWICE": "2.0 * {0}",
          "OP_INV": "1.0 / {0}", "OP_FABS": "abs({0})", "OP_NOT": "1.0 if {0} == 0.0 else 0.0",
          "OP_SIGN": "1.0 if {0} > 0.0 else (-1.0 if {0} < 0.0 else 0.0)",
          **{f"OP_{n.upper()}": f"math.{n}({{0}})" for n in
             ("exp", "log", "sqrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh",
              "asinh", "acosh", "atanh", "floor", "ceil", "erf", "log1p", "expm1")}}


def sx_to_numba_source(fn, name: str, input_names: list[str], output_names: list[str]) -> str:
    """Python source of one ``@njit`` function evaluating the CasADi SX function ``fn``.

    Inputs are 1-D arrays (dense, in the order of ``fn``'s inputs); every output is written into
    a preallocated array argument: 1-D for a column vector, 2-D (row, col) otherwise, with the
    structural zeros written too. No allocation, no Python objects: one straight-line block.
    """
    ca = _ca()
    opnames = {getattr(ca, k): k for k in dir(ca) if k.startswith("OP_")}
    out_shapes = [fn.sparsity_out(i) for i in range(fn.n_out())]
    lines = [f"@njit(cache=True, error_model='numpy')",
             f"def {name}({', '.join(input_names + output_names)}):"]
    for i, sp in enumerate(out_shapes):  # structural zeros first
        dense = np.zeros(sp.shape, dtype=bool)
        rows, cols = sp.get_triplet()
        dense[rows, cols] = True
        for r, c in zip(*np.nonzero(~dense)):
            lines.append(f"    {_target(output_names[i], sp, r, c)} = 0.0")
    for k in range(fn.n_instructions()):
        op = opnames[fn.instruction_id(k)]
        ins, outs = fn.instruction_input(k), fn.instruction_output(k)
        if op == "OP_CONST":
            lines.append(f"    w{outs[0]} = {float(fn.instruction_constant(k))!r}")
        elif op == "OP_INPUT":
            lines.append(f"    w{outs[0]} = {input_names[ins[0]]}[{ins[1]}]")
        elif op == "OP_OUTPUT":
            sp = out_shapes[outs[0]]
            rows, cols = sp.get_triplet()
            lines.append(f"    {_target(output_names[outs[0]], sp, rows[outs[1]], cols[outs[1]])} = w{ins[0]}")
        elif op in _BINARY:
            lines.append(f"    w{outs[0]} = " + _BINARY[op].format(f"w{ins[0]}", f"w{ins[1]}"))
        elif op in _UNARY:
            lines.append(f"    w{outs[0]} = " + _UNARY[op].format(f"w{ins[0]}"))
        else:
            raise ValueError(f"CasADi operation {op} has no Numba translation")
    return "\n".join(lines) + "\n"


def _target(name: str, sp, r: int, c: int) -> str:
    return f"{name}[{r}]" if sp.shape[1] == 1 else f"{name}[{r}, {c}]"


def _derivative_functions(ca, name: str, expr, w, extra_inputs: list, input_names: list[str]):
    """(source of f, jacobian wrt w, multiplier-weighted Hessian wrt w) for expression ``expr(w)``."""
    nw = w.shape[0]
    lam = ca.SX.sym("lam", expr.shape[0])
    inputs = [*extra_inputs]
    jac = ca.jacobian(expr, w)
    hess, _ = ca.hessian(ca.dot(lam, expr), w)
    f_fn = ca.Function(f"{name}_f", inputs, [expr])
    j_fn = ca.Function(f"{name}_jac", inputs, [jac])
    fj_fn = ca.Function(f"{name}_fjac", inputs, [expr, jac])
    h_fn = ca.Function(f"{name}_hess", [*inputs[:2], lam, *inputs[2:]], [hess])
    assert jac.shape == (expr.shape[0], nw)
    h_names = [*input_names[:2], "lam", *input_names[2:]]
    return (sx_to_numba_source(f_fn, f"{name}_f", input_names, ["out"]),
            sx_to_numba_source(j_fn, f"{name}_jac", input_names, ["out"]),
            sx_to_numba_source(fj_fn, f"{name}_fjac", input_names, ["out_f", "out_jac"]),
            sx_to_numba_source(h_fn, f"{name}_hess", h_names, ["out"]))


def generate_kernel_source() -> str:
    """The whole text of ``kernels/ilqr_generated.py``."""
    ca = _ca()
    blocks = ['"""Generated by ``python -m mbrl_control.models.derivatives`` from the CasADi mirror of the models',
              "(mbrl_control/models/derivatives.py); do not edit. Continuous-time single-track derivative",
              "``st_<kind>_f(z, u, p, out)``, its Jacobian wrt (z, u) ``st_<kind>_jac`` (7x9), both ``st_<kind>_fjac``, the",
              "multiplier-weighted Hessian ``st_<kind>_hess(z, u, lam, p, out)`` (9x9); the PROBLEM.md bicycle",
              "step ``bt_step_*`` (4 states, 2 controls) and state cost ``bt_cost_*``; the smooth racing cost",
              '``rc_stage_*(x, u, ref, w, out)`` / ``rc_final_*(x, ref, w, out)`` (value, gradient, Hessian)."""', "",
              "import math", "", "from numba import njit", ""]
    s, u, p = ca.SX.sym("s", STATE_DIM), ca.SX.sym("u", CONTROL_DIM), ca.SX.sym("p", len(PARAM_NAMES))
    w = ca.vertcat(s, u)
    for kind in MODEL_KINDS:
        expr = single_track_derivative(kind, s, u, symbolic_params(ca, p))
        blocks += ["", *_derivative_functions(ca, f"st_{kind}", expr, w, [s, u, p], ["z", "u", "p"])]
    x4, u2 = ca.SX.sym("x", 4), ca.SX.sym("u", 2)
    expr = bicycle_track_step(x4, u2)
    blocks += ["", *_derivative_functions(ca, "bt_step", expr, ca.vertcat(x4, u2), [x4, u2], ["x", "u"])]
    q = bicycle_track_state_cost(x4)
    qg, _ = ca.jacobian(q, x4).T, None
    qh, _ = ca.hessian(q, x4)
    for fname, out in (("bt_cost_value", q), ("bt_cost_grad", qg), ("bt_cost_hess", qh)):
        blocks += ["", sx_to_numba_source(ca.Function(fname, [x4], [out]), fname, ["x"], ["out"])]
    xs, us = ca.SX.sym("x", STATE_DIM), ca.SX.sym("u", CONTROL_DIM)
    ref, wts = ca.SX.sym("ref", len(REF_FIELDS)), ca.SX.sym("w", len(WEIGHT_FIELDS))
    xu = ca.vertcat(xs, us)
    c = racing_stage_cost(xs, us, ref, wts)
    cf = racing_state_cost(xs, ref, wts)
    for fname, ins, names, out in (
            ("rc_stage_value", [xs, us, ref, wts], ["x", "u", "ref", "w"], c),
            ("rc_stage_grad", [xs, us, ref, wts], ["x", "u", "ref", "w"], ca.jacobian(c, xu).T),
            ("rc_stage_hess", [xs, us, ref, wts], ["x", "u", "ref", "w"], ca.hessian(c, xu)[0]),
            ("rc_stage_derivs", [xs, us, ref, wts], ["x", "u", "ref", "w"], [ca.jacobian(c, xu).T, ca.hessian(c, xu)[0]]),
            ("rc_final_value", [xs, ref, wts], ["x", "ref", "w"], cf),
            ("rc_final_grad", [xs, ref, wts], ["x", "ref", "w"], ca.jacobian(cf, xs).T),
            ("rc_final_hess", [xs, ref, wts], ["x", "ref", "w"], ca.hessian(cf, xs)[0])):
        outs = out if isinstance(out, list) else [out]
        out_names = ["out"] if len(outs) == 1 else [f"out{i}" for i in range(len(outs))]
        blocks += ["", sx_to_numba_source(ca.Function(fname, ins, outs), fname, names, out_names)]
    return "\n".join(blocks).rstrip() + "\n"


GENERATED_PATH = Path(__file__).resolve().parent.parent / "kernels" / "ilqr_generated.py"


def write_generated(path: Path = GENERATED_PATH) -> Path:
    path.write_text(generate_kernel_source())
    return path


# --------------------------------------------------------------------------- numpy-facing API
def casadi_function(kind: str, params: VehicleParams):
    """A CasADi ``Function('f', [s, u], [ds/dt])`` of the single-track model with numeric parameters."""
    ca = _ca()
    s, u = ca.SX.sym("s", STATE_DIM), ca.SX.sym("u", CONTROL_DIM)
    p = {name: getattr(params, name) for name in PARAM_NAMES}
    return ca.Function("f", [s, u], [single_track_derivative(kind, s, u, p)])


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


def main(argv: list[str] | None = None) -> int:
    """``python -m mbrl_control.models.derivatives``: regenerate ``kernels/ilqr_generated.py``."""
    path = write_generated()
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
