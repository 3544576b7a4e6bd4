"""The car on a race track for the generic iLQR solve: model step, exact derivatives, racing cost.

Dynamics: one step of the prediction model = ``substeps`` explicit RK4 (or Euler) steps of the
generated continuous-time single-track derivative (``gen.st_<kind>_*`` of :mod:`.casadi_codegen`),
then, for a semi-parametric model, the residual ensemble's mean correction of (V, YAW_RATE, SLIP), evaluated
at the pre-step state and control (as ``SemiParametricModel.forward``).

Exact derivatives of that discrete step:

* Jacobian by forward-mode propagation through the RK4 stages:
  ``dz_i = D + c_i h dk_{i-1}``, ``dk_i = J_f(z_i, u) [dz_i; 0 I]``;
* the multiplier-weighted Hessian ``sum_j lam_j d2 F_j`` (DDP) by the second-order adjoint
  identity for a composition: the sum over the nonlinear stage evaluations of
  ``W_i' (sum_j kbar_ij d2 f_j(z_i, u)) W_i``, with ``W_i = d(z_i, u)/d(x, u)`` from the forward
  pass and ``kbar_i`` the reverse-mode adjoint of stage ``i``; linear combinations add none;
* the residual MLP (tanh) in closed form: ``d tanh = (1 - h^2)``, ``d2 tanh = -2 h (1 - h^2)``,
  Hessian ``sum_layers A' diag(hbar * tanh'') A`` with ``A`` the pre-activation Jacobians: a
  hand-specialised executor of the residual's one definition
  (:mod:`mbrl_control.models.residual_definition`), checked against torch autograd of it in
  ``test/test_residual_definition.py``.

Cost: the smooth racing cost :class:`mbrl_control.problem.costs.contouring.ContouringCost`
(generated ``gen.rc_*``), its stage cost on ``(x_t, u_t)`` and its state cost on ``x_T``, against a per-step reference frozen during one iteration; ``prob_accept`` re-projects each
accepted trajectory on a periodic cubic spline of the centerline (Newton on
``c'(s).(c(s) - p) = 0``, warm-started along the trajectory) and refreshes the reference.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit, types
from numba.extending import overload

from mbrl_control.kernels.casadi_codegen import ilqr_derivatives
from mbrl_control.kernels.ilqr import register_problem

gen = ilqr_derivatives()  # generated derivative kernels; a module global, so Numba resolves gen.<fn>

NX, NU, NW = 7, 2, 9
FEATURE_INDEX = np.array([2, 3, 5, 6, 7, 8], dtype=np.int64)  # (STEER, V, YAW_RATE, SLIP, STEER_CMD, ACCEL) in w
VELOCITY_INDEX = np.array([3, 5, 6], dtype=np.int64)  # (V, YAW_RATE, SLIP)
N_REF = 8

FIELDS = [
    # dynamics: params (21), disc = [h, substeps, rk4 (1/0)]
    "p", "disc",
    # residual ensemble: meta = [members, layers]; sizes (layers+1); flat weights/biases; norm = in_mean(6),
    # in_std(6), out_mean(3), out_std(3); scratch
    "res_meta", "res_sizes", "res_w", "res_b", "res_norm", "res_h", "res_A", "res_bar",
    # racing cost: weights, per-step reference (T+1, 8), progress (T+1), spline knots / coefficients,
    # per-knot bounds and speed cap, track = [length, margin]
    "w", "ref", "ref_s", "knots", "coef", "bound_left", "bound_right", "v_max", "track",
    # scratch
    "kb", "zb", "D", "Dk", "Zs", "Js", "Dz", "Ws", "T1", "kbar", "zbar", "abar", "g9", "H9", "Hacc", "o1"]

VehicleDynamicProblem = namedtuple("VehicleDynamicProblem", FIELDS)
VehicleKinematicProblem = namedtuple("VehicleKinematicProblem", FIELDS)
PROBLEM_CLASSES = {"dynamic": VehicleDynamicProblem, "kinematic": VehicleKinematicProblem}


def make_vehicle_problem(kind: str, params_vec: np.ndarray, dt_s: float, substeps: int, rk4: bool, horizon: int,
                         weights: np.ndarray, spline: dict, residual: dict | None = None):
    """Allocate a problem (all scratch included). ``spline``: knots, coef, bound_left, bound_right, v_max, length, margin."""
    cls = PROBLEM_CLASSES[kind]
    nst = 4 * int(substeps)
    res = residual_arrays(residual)
    hmax = int(max(res["res_sizes"].max(), 6))
    layers = int(res["res_meta"][1])
    z = np.zeros
    return cls(
        p=np.asarray(params_vec, dtype=np.float64).copy(), disc=np.array([dt_s / substeps, substeps, 1.0 if rk4 else 0.0]),
        **res, res_h=z((layers + 1, hmax)), res_A=z((layers + 1, hmax, NW)), res_bar=z((2, hmax)),
        w=np.asarray(weights, dtype=np.float64).copy(), ref=z((horizon + 1, N_REF)), ref_s=z(horizon + 1),
        knots=np.ascontiguousarray(spline["knots"], dtype=np.float64),
        coef=np.ascontiguousarray(spline["coef"], dtype=np.float64),
        bound_left=np.ascontiguousarray(spline["bound_left"], dtype=np.float64),
        bound_right=np.ascontiguousarray(spline["bound_right"], dtype=np.float64),
        v_max=np.ascontiguousarray(spline["v_max"], dtype=np.float64),
        track=np.array([spline["length"], spline["margin"]], dtype=np.float64),
        kb=z((4, NX)), zb=z(NX), D=z((NX, NW)), Dk=z((4, NX, NW)), Zs=z((nst, NX)), Js=z((nst, NX, NW)),
        Dz=z((nst, NX, NW)), Ws=z((NW, NW)), T1=z((NW, NW)), kbar=z((4, NX)), zbar=z((4, NX)), abar=z(NX),
        g9=z(NW), H9=z((NW, NW)), Hacc=z((NW, NW)), o1=z(1))


def residual_arrays(residual: dict | None) -> dict:
    """Flatten exported residual weights (``ResidualWeights``-like dict) for the kernels; None -> no residual."""
    if residual is None:
        return {"res_meta": np.zeros(2, dtype=np.int64), "res_sizes": np.array([6, 6], dtype=np.int64),
                "res_w": np.zeros(1), "res_b": np.zeros(1), "res_norm": np.zeros(18)}
    weights = [np.asarray(w, dtype=np.float64) for w in residual["weights"]]
    biases = [np.asarray(b, dtype=np.float64) for b in residual["biases"]]
    E = weights[0].shape[0]
    sizes = [weights[0].shape[2]] + [w.shape[1] for w in weights]
    sizes[-1] = 3  # the kernels use rows 0..2 (the mean) of the last layer
    # layer-major: all members' (out, in) matrices of layer 0, then layer 1, ...
    w_flat = np.concatenate([w[:, :s_out, :].reshape(-1) for w, s_out in zip(weights, sizes[1:])])
    b_flat = np.concatenate([b[:, :s_out].reshape(-1) for b, s_out in zip(biases, sizes[1:])])
    norm = np.concatenate([residual["in_mean"], residual["in_std"], residual["out_mean"], residual["out_std"]]).astype(np.float64)
    return {"res_meta": np.array([E, len(weights)], dtype=np.int64), "res_sizes": np.array(sizes, dtype=np.int64),
            "res_w": w_flat, "res_b": b_flat, "res_norm": norm}


# --------------------------------------------------------------------------- model kind dispatch
def model_f(prob, z, u, out):
    raise NotImplementedError


def model_jac(prob, z, u, out):
    raise NotImplementedError


def model_hess(prob, z, u, lam, out):
    raise NotImplementedError


def model_fjac(prob, z, u, out_f, out_jac):
    raise NotImplementedError


@overload(model_fjac)
def _model_fjac(prob, z, u, out_f, out_jac):
    if _is(prob, VehicleDynamicProblem):
        return lambda prob, z, u, out_f, out_jac: gen.st_dynamic_fjac(z, u, prob.p, out_f, out_jac)
    if _is(prob, VehicleKinematicProblem):
        return lambda prob, z, u, out_f, out_jac: gen.st_kinematic_fjac(z, u, prob.p, out_f, out_jac)


def _is(prob, cls) -> bool:
    return isinstance(prob, types.BaseNamedTuple) and prob.instance_class is cls


@overload(model_f)
def _model_f(prob, z, u, out):
    if _is(prob, VehicleDynamicProblem):
        return lambda prob, z, u, out: gen.st_dynamic_f(z, u, prob.p, out)
    if _is(prob, VehicleKinematicProblem):
        return lambda prob, z, u, out: gen.st_kinematic_f(z, u, prob.p, out)


@overload(model_jac)
def _model_jac(prob, z, u, out):
    if _is(prob, VehicleDynamicProblem):
        return lambda prob, z, u, out: gen.st_dynamic_jac(z, u, prob.p, out)
    if _is(prob, VehicleKinematicProblem):
        return lambda prob, z, u, out: gen.st_kinematic_jac(z, u, prob.p, out)


@overload(model_hess)
def _model_hess(prob, z, u, lam, out):
    if _is(prob, VehicleDynamicProblem):
        return lambda prob, z, u, lam, out: gen.st_dynamic_hess(z, u, lam, prob.p, out)
    if _is(prob, VehicleKinematicProblem):
        return lambda prob, z, u, lam, out: gen.st_kinematic_hess(z, u, lam, prob.p, out)


# --------------------------------------------------------------------------- residual MLP
@njit(cache=True, error_model="numpy")
def residual_eval(prob, x, u, order, out, jac, lam, hess):
    """Ensemble-mean correction (3) of (V, YAW_RATE, SLIP) at (x, u) into ``out``.

    order >= 1 also writes its Jacobian wrt w = (x, u) into ``jac`` (3, 9); order 2 adds
    ``sum_c lam_c d2 r_c / dw2`` into ``hess`` (9, 9). For order 2, ``res_A[l]`` holds d(layer-l
    input before its tanh)/dw: the normalised features for l = 0, the pre-activations for l >= 1.
    """
    E, L = prob.res_meta[0], prob.res_meta[1]
    for c in range(3):
        out[c] = 0.0
        if order >= 1:
            for j in range(NW):
                jac[c, j] = 0.0
    if E == 0:
        return
    sizes, norm, h, A = prob.res_sizes, prob.res_norm, prob.res_h, prob.res_A
    tangents = order >= 2  # forward-mode sensitivities, needed by the Hessian; the Jacobian alone
    for i in range(6):     # is cheaper in reverse mode (3 outputs vs 9 inputs)
        wi = FEATURE_INDEX[i]
        v = x[wi] if wi < NX else u[wi - NX]
        h[0, i] = (v - norm[i]) / norm[6 + i]
        if tangents:
            for j in range(NW):
                A[0, i, j] = 0.0
            A[0, i, wi] = 1.0 / norm[6 + i]
    inv_e = 1.0 / E
    for e in range(E):
        for l in range(L):
            n_in, n_out = sizes[l], sizes[l + 1]
            w_base = _layer_offset_w(sizes, E, l) + e * n_out * n_in
            b_base = _layer_offset_b(sizes, E, l) + e * n_out
            last = l == L - 1
            for o in range(n_out):
                acc = prob.res_b[b_base + o]
                for i in range(n_in):
                    acc += prob.res_w[w_base + o * n_in + i] * h[l, i]
                h[l + 1, o] = acc if last else np.tanh(acc)
                if tangents:
                    for j in range(NW):
                        g = 0.0
                        for i in range(n_in):
                            dh = 1.0 if l == 0 else 1.0 - h[l, i] * h[l, i]
                            g += prob.res_w[w_base + o * n_in + i] * dh * A[l, i, j]
                        A[l + 1, o, j] = g
        for c in range(3):
            out[c] += inv_e * (norm[12 + c] + norm[15 + c] * h[L, c])
            if tangents:
                for j in range(NW):
                    jac[c, j] += inv_e * norm[15 + c] * A[L, c, j]
            elif order == 1:
                _residual_gradient(prob, e, c, jac, inv_e * norm[15 + c])
        if order >= 2:
            _residual_hessian(prob, e, lam, hess, inv_e)


@njit(cache=True, error_model="numpy")
def _residual_gradient(prob, e, c, jac, scale):
    """Add ``scale * d y_c / dw`` of member e to ``jac[c]`` by one reverse sweep (activations in res_h)."""
    E, L = prob.res_meta[0], prob.res_meta[1]
    sizes, norm, h, bar = prob.res_sizes, prob.res_norm, prob.res_h, prob.res_bar
    for o in range(sizes[L]):
        bar[0, o] = 1.0 if o == c else 0.0
    cur = 0
    for l in range(L - 1, -1, -1):
        n_in, n_out = sizes[l], sizes[l + 1]
        w_base = _layer_offset_w(sizes, E, l) + e * n_out * n_in
        nxt = 1 - cur
        for i in range(n_in):
            acc = 0.0
            for o in range(n_out):
                acc += prob.res_w[w_base + o * n_in + i] * bar[cur, o]
            bar[nxt, i] = acc * (1.0 - h[l, i] * h[l, i]) if l >= 1 else acc
        cur = nxt
    for i in range(6):
        jac[c, FEATURE_INDEX[i]] += scale * bar[cur, i] / norm[6 + i]


@njit(cache=True, error_model="numpy")
def _layer_offset_w(sizes, E, l):
    off = 0
    for k in range(l):
        off += E * sizes[k] * sizes[k + 1]
    return off


@njit(cache=True, error_model="numpy")
def _layer_offset_b(sizes, E, l):
    off = 0
    for k in range(l):
        off += E * sizes[k + 1]
    return off


@njit(cache=True, error_model="numpy")
def _residual_hessian(prob, e, lam, hess, inv_e):
    """Add ``inv_e * sum_c lam_c out_std_c d2 y_c / dw2`` of member e (its activations are in res_h / res_A).

    Reverse sweep over the hidden layers: the adjoint ``s`` of ``h = tanh(a)`` contributes
    ``s tanh''(a) (da/dw)(da/dw)'`` with ``tanh'' = -2 h (1 - h^2)``.
    """
    E, L = prob.res_meta[0], prob.res_meta[1]
    sizes, norm, h, A, bar = prob.res_sizes, prob.res_norm, prob.res_h, prob.res_A, prob.res_bar
    for c in range(sizes[L]):
        bar[0, c] = inv_e * lam[c] * norm[15 + c]
    cur = 0
    for l in range(L - 1, 0, -1):
        n_in, n_out = sizes[l], sizes[l + 1]
        w_base = _layer_offset_w(sizes, E, l) + e * n_out * n_in
        nxt = 1 - cur
        for i in range(n_in):
            s = 0.0
            for o in range(n_out):
                s += prob.res_w[w_base + o * n_in + i] * bar[cur, o]
            hv = h[l, i]
            dh = 1.0 - hv * hv
            coeff = s * (-2.0 * hv * dh)
            if coeff != 0.0:
                for j in range(NW):
                    gj = A[l, i, j]
                    if gj != 0.0:
                        for k in range(NW):
                            hess[j, k] += coeff * gj * A[l, i, k]
            bar[nxt, i] = s * dh
        cur = nxt


# --------------------------------------------------------------------------- dynamics
@njit(cache=True, error_model="numpy")
def vehicle_step(prob, x, u, xn):
    """One model step (RK4/Euler substeps + residual) from x into xn."""
    h = prob.disc[0]
    nsub = int(prob.disc[1])
    rk4 = prob.disc[2] > 0.5
    k, z = prob.kb, prob.zb
    for i in range(NX):
        xn[i] = x[i]
    for _ in range(nsub):
        model_f(prob, xn, u, k[0])
        if rk4:
            for i in range(NX):
                z[i] = xn[i] + 0.5 * h * k[0, i]
            model_f(prob, z, u, k[1])
            for i in range(NX):
                z[i] = xn[i] + 0.5 * h * k[1, i]
            model_f(prob, z, u, k[2])
            for i in range(NX):
                z[i] = xn[i] + h * k[2, i]
            model_f(prob, z, u, k[3])
            for i in range(NX):
                xn[i] += h / 6.0 * (k[0, i] + 2.0 * k[1, i] + 2.0 * k[2, i] + k[3, i])
        else:
            for i in range(NX):
                xn[i] += h * k[0, i]
    if prob.res_meta[0] > 0:
        r = prob.zb
        residual_eval(prob, x, u, 0, r, prob.T1, prob.abar, prob.H9)
        for c in range(3):
            xn[VELOCITY_INDEX[c]] += r[c]


@njit(cache=True, error_model="numpy")
def vehicle_jacobian(prob, x, u, D):
    """D (7, 9) = dF/d(x, u) of one model step; stage data (Zs, Js, Dz) kept for the Hessian."""
    h = prob.disc[0]
    nsub = int(prob.disc[1])
    rk4 = prob.disc[2] > 0.5
    k, y, Dk = prob.kb, prob.abar, prob.Dk
    stages = 4 if rk4 else 1
    for i in range(NX):
        y[i] = x[i]
        for j in range(NW):
            D[i, j] = 1.0 if i == j else 0.0
    c_stage = (0.0, 0.5, 0.5, 1.0)
    for s in range(nsub):
        for st in range(stages):
            idx = s * 4 + st
            zi, Ji, Dzi = prob.Zs[idx], prob.Js[idx], prob.Dz[idx]
            c = c_stage[st] * h
            for i in range(NX):
                zi[i] = y[i] + (c * k[st - 1, i] if st > 0 else 0.0)
                for j in range(NW):
                    Dzi[i, j] = D[i, j] + (c * Dk[st - 1, i, j] if st > 0 else 0.0)
            model_fjac(prob, zi, u, k[st], Ji)
            if s == 0 and st == 0:  # dz/dw = [I 0]
                for i in range(NX):
                    for j in range(NW):
                        Dk[0, i, j] = Ji[i, j]
                continue
            for i in range(NX):
                for j in range(NW):
                    acc = Ji[i, j] if j >= NX else 0.0
                    for l in range(NX):
                        acc += Ji[i, l] * Dzi[l, j]
                    Dk[st, i, j] = acc
        if rk4:
            for i in range(NX):
                y[i] += h / 6.0 * (k[0, i] + 2.0 * k[1, i] + 2.0 * k[2, i] + k[3, i])
                for j in range(NW):
                    D[i, j] += h / 6.0 * (Dk[0, i, j] + 2.0 * Dk[1, i, j] + 2.0 * Dk[2, i, j] + Dk[3, i, j])
        else:
            for i in range(NX):
                y[i] += h * k[0, i]
                for j in range(NW):
                    D[i, j] += h * Dk[0, i, j]
    if prob.res_meta[0] > 0:
        jr = prob.T1
        residual_eval(prob, x, u, 1, prob.zb, jr, prob.abar, prob.H9)
        for c in range(3):
            for j in range(NW):
                D[VELOCITY_INDEX[c], j] += jr[c, j]


@njit(cache=True, error_model="numpy")
def vehicle_hessian(prob, x, u, lam, H):
    """H (9, 9) = sum_j lam_j d2 F_j / d(x, u)2 of one model step (exact, second-order adjoint)."""
    vehicle_jacobian(prob, x, u, prob.D)  # stage states, Jacobians and input sensitivities
    h = prob.disc[0]
    nsub = int(prob.disc[1])
    rk4 = prob.disc[2] > 0.5
    stages = 4 if rk4 else 1
    abar, kbar, zbar, W, T1 = prob.zb, prob.kbar, prob.zbar, prob.Ws, prob.T1
    for i in range(NW):
        for j in range(NW):
            H[i, j] = 0.0
    for i in range(NX):
        abar[i] = lam[i]
    if rk4:
        wk = (h / 6.0, h / 3.0, h / 3.0, h / 6.0)
        cz = (0.5 * h, 0.5 * h, h, 0.0)  # z_{st+1} = y + cz[st] k_st
    else:
        wk = (h, 0.0, 0.0, 0.0)
        cz = (0.0, 0.0, 0.0, 0.0)
    for s in range(nsub - 1, -1, -1):
        for st in range(stages - 1, -1, -1):
            Ji = prob.Js[s * 4 + st]
            for i in range(NX):
                kb = wk[st] * abar[i]
                if st < stages - 1:
                    kb += cz[st] * zbar[st + 1, i]
                kbar[st, i] = kb
            for l in range(NX):
                acc = 0.0
                for i in range(NX):
                    acc += Ji[i, l] * kbar[st, i]
                zbar[st, l] = acc
        for l in range(NX):
            acc = abar[l]
            for st in range(stages):
                acc += zbar[st, l]
            abar[l] = acc
        for st in range(stages):
            idx = s * 4 + st
            model_hess(prob, prob.Zs[idx], u, kbar[st], prob.H9)
            Dzi = prob.Dz[idx]
            for i in range(NW):  # W = d(z, u)/d(x, u)
                for j in range(NW):
                    W[i, j] = Dzi[i, j] if i < NX else (1.0 if j == i else 0.0)
            for i in range(NW):
                for j in range(NW):
                    acc = 0.0
                    for l in range(NW):
                        acc += prob.H9[i, l] * W[l, j]
                    T1[i, j] = acc
            for i in range(NW):
                for j in range(NW):
                    acc = 0.0
                    for l in range(NW):
                        acc += W[l, i] * T1[l, j]
                    H[i, j] += acc
    if prob.res_meta[0] > 0:
        lv = prob.kbar[0]
        for c in range(3):
            lv[c] = lam[VELOCITY_INDEX[c]]
        residual_eval(prob, x, u, 2, prob.zbar[0], prob.T1, lv, H)


# --------------------------------------------------------------------------- track spline and reference
@njit(cache=True, error_model="numpy")
def spline_eval(prob, s, out):
    """out = [x, y, dx/ds, dy/ds, d2x/ds2, d2y/ds2] of the periodic centerline spline at arclength s."""
    L = prob.track[0]
    knots, coef = prob.knots, prob.coef
    sm = s - L * np.floor(s / L)
    n = coef.shape[0]
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if knots[mid] <= sm:
            lo = mid
        else:
            hi = mid
    d = sm - knots[lo]
    for a in range(2):
        c0, c1, c2, c3 = coef[lo, 0, a], coef[lo, 1, a], coef[lo, 2, a], coef[lo, 3, a]
        out[a] = ((c0 * d + c1) * d + c2) * d + c3
        out[2 + a] = (3.0 * c0 * d + 2.0 * c1) * d + c2
        out[4 + a] = 6.0 * c0 * d + 2.0 * c1
    return lo, d / (knots[lo + 1] - knots[lo])


@njit(cache=True, error_model="numpy")
def project(prob, px, py, s_guess):
    """Arclength of the nearest spline point to (px, py), by Newton iterations from ``s_guess``."""
    e = prob.kbar[0]
    s = s_guess
    for _ in range(6):
        spline_eval(prob, s, e)
        rx, ry = e[0] - px, e[1] - py
        g = e[2] * rx + e[3] * ry
        gp = e[2] * e[2] + e[3] * e[3] + e[4] * rx + e[5] * ry
        if gp < 0.2:
            gp = e[2] * e[2] + e[3] * e[3]
        step = -g / gp
        step = min(max(step, -1.0), 1.0)
        s += step
        if abs(step) < 1e-10:
            break
    return s


@njit(cache=True, error_model="numpy")
def set_reference(prob, t, s):
    """Freeze the cost reference of step t at arclength s."""
    e = prob.kbar[1]
    seg, frac = spline_eval(prob, s, e)
    speed = np.sqrt(e[2] * e[2] + e[3] * e[3])
    r = prob.ref[t]
    r[0], r[1] = e[0], e[1]
    r[2], r[3] = e[2] / speed, e[3] / speed
    r[4] = (e[2] * e[5] - e[3] * e[4]) / (speed * speed * speed)
    margin = prob.track[1]
    r[5] = (1.0 - frac) * prob.bound_left[seg] + frac * prob.bound_left[seg + 1] - margin
    r[6] = (1.0 - frac) * prob.bound_right[seg] + frac * prob.bound_right[seg + 1] - margin
    r[7] = (1.0 - frac) * prob.v_max[seg] + frac * prob.v_max[seg + 1]
    prob.ref_s[t] = s


@njit(cache=True, error_model="numpy")
def update_reference(prob, X):
    """Project every state of the trajectory, each warm-started from its predecessor's projection."""
    T = X.shape[0] - 1
    s = project(prob, X[0, 0], X[0, 1], prob.ref_s[0])
    set_reference(prob, 0, s)
    for t in range(1, T + 1):
        dx, dy = X[t, 0] - X[t - 1, 0], X[t, 1] - X[t - 1, 1]
        guess = s + np.sqrt(dx * dx + dy * dy) * (1.0 if X[t - 1, 3] >= 0 else -1.0)
        s = project(prob, X[t, 0], X[t, 1], guess)
        set_reference(prob, t, s)


# --------------------------------------------------------------------------- problem protocol
@njit(cache=True, error_model="numpy")
def _step(prob, t, x, u, xn):
    vehicle_step(prob, x, u, xn)


@njit(cache=True, error_model="numpy")
def _linearize(prob, t, x, u, fx, fu):
    D = prob.D
    vehicle_jacobian(prob, x, u, D)
    for i in range(NX):
        for j in range(NX):
            fx[i, j] = D[i, j]
        for j in range(NU):
            fu[i, j] = D[i, NX + j]


@njit(cache=True, error_model="numpy")
def _dyn_hessian(prob, t, x, u, lam, hxx, huu, hux):
    H = prob.Hacc
    vehicle_hessian(prob, x, u, lam, H)
    for i in range(NX):
        for j in range(NX):
            hxx[i, j] = H[i, j]
    for i in range(NU):
        for j in range(NU):
            huu[i, j] = H[NX + i, NX + j]
        for j in range(NX):
            hux[i, j] = H[NX + i, j]


@njit(cache=True, error_model="numpy")
def _stage_cost(prob, t, x, u):
    gen.rc_stage_value(x, u, prob.ref[t], prob.w, prob.o1)
    return prob.o1[0]


@njit(cache=True, error_model="numpy")
def _stage_derivs(prob, t, x, u, lx, lu, lxx, luu, lux):
    g, H = prob.g9, prob.H9
    gen.rc_stage_derivs(x, u, prob.ref[t], prob.w, g, H)
    for i in range(NX):
        lx[i] = g[i]
        for j in range(NX):
            lxx[i, j] = H[i, j]
    for i in range(NU):
        lu[i] = g[NX + i]
        for j in range(NU):
            luu[i, j] = H[NX + i, NX + j]
        for j in range(NX):
            lux[i, j] = H[NX + i, j]


@njit(cache=True, error_model="numpy")
def _final_cost(prob, x):
    gen.rc_final_value(x, prob.ref[prob.ref.shape[0] - 1], prob.w, prob.o1)
    return prob.o1[0]


@njit(cache=True, error_model="numpy")
def _final_derivs(prob, x, lx, lxx):
    T = prob.ref.shape[0] - 1
    gen.rc_final_grad(x, prob.ref[T], prob.w, lx)
    gen.rc_final_hess(x, prob.ref[T], prob.w, lxx)


@njit(cache=True, error_model="numpy")
def _accept(prob, X, U):
    update_reference(prob, X)


for _cls in PROBLEM_CLASSES.values():
    register_problem(_cls, step=_step, linearize=_linearize, dyn_hessian=_dyn_hessian, stage_cost=_stage_cost,
                     stage_derivs=_stage_derivs, final_cost=_final_cost, final_derivs=_final_derivs, accept=_accept)
