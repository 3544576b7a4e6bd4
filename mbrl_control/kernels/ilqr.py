"""Compiled iLQR / control-limited DDP solve (Numba), generic over the problem.

One call of :func:`solve` runs the whole optimisation (rollouts, linearisation, backward pass,
line search, regularisation schedule) in machine code: no Python per iteration or per step.

Algorithm (Tassa, Erez & Todorov 2012, "Synthesis and stabilization of complex behaviors through
online trajectory optimization"; Tassa, Mansard & Todorov 2014, "Control-limited differential
dynamic programming"):

* backward pass on ``Q = l + V'(f)``; iLQR keeps the Gauss-Newton part, DDP adds the
  second-order dynamics terms ``sum_i V'_x[i] d2f_i``; the control step solves the box QP
  ``min 0.5 du' Quu du + Qu' du, u_lo - u <= du <= u_hi - u`` by projected Newton; clamped
  controls get zero feedback gain;
* Levenberg-Marquardt regularisation ``Quu + mu I`` with Tassa's multiplicative schedule;
  a non positive-definite free block or a non-finite backward pass raises ``mu``, and so (option
  ``alpha_keep_mu``) does a step accepted only after backtracking below that length;
* forward pass ``u = clip(u_bar + alpha k + K (x - x_bar))`` with backtracking over ``alpha``,
  accepted when the actual reduction is at least ``c1`` times the expected reduction
  ``-(alpha dV1 + alpha^2 dV2)``;
* converged when the relative cost decrease, the expected decrease of a full step, or the
  normalised step ``mean_t max_i |k|/(|u|+1)`` falls below its tolerance; ``mu > mu_max`` or a
  non-finite cost is divergence.

A problem is a namedtuple whose class a problem module registers overloads of the ``prob_*``
stubs below for (see ``ilqr_lq.py``, ``ilqr_problem.py``, ``ilqr_vehicle.py``). The stage cost is
``l_t(x_t, u_t)`` for ``t < T`` plus the final cost ``phi(x_T)``.
"""

from __future__ import annotations

import hashlib
from collections import namedtuple
from pathlib import Path

import numpy as np
from numba import njit

_KERNEL_SOURCES = ("ilqr.py", "ilqr_lq.py", "ilqr_vehicle.py", "casadi_codegen.py")


def _drop_stale_cache() -> None:
    """Delete this family's Numba cache files when any of its sources changed.

    Numba checks only the source file of a cached function, but ``solve`` inlines the problem
    modules' functions (and those the generated derivatives): an edit there would otherwise leave a
    stale ``solve`` in the cache. A hash of all the sources, and of the key naming the generated
    derivatives (:func:`.casadi_codegen.ilqr_derivatives_key`), is kept beside the cache files.
    """
    from numba.core import config

    from mbrl_control.kernels.casadi_codegen import ilqr_derivatives_key

    here = Path(__file__).resolve().parent
    sources = b"".join((here / f).read_bytes() for f in _KERNEL_SOURCES if (here / f).is_file())
    digest = hashlib.sha256(sources + ilqr_derivatives_key().encode()).hexdigest()
    cache_dir = Path(config.CACHE_DIR) if config.CACHE_DIR else here / "__pycache__"
    for folder in {cache_dir, *cache_dir.rglob("kernels")} if cache_dir.is_dir() else ():
        stamp = folder / "ilqr_sources.sha256"
        if not any(folder.glob("ilqr*.nbi")) or (stamp.is_file() and stamp.read_text() == digest):
            continue
        for f in list(folder.glob("ilqr*.nbi")) + list(folder.glob("ilqr*.nbc")):
            f.unlink(missing_ok=True)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / "ilqr_sources.sha256").write_text(digest)
    except OSError:  # read-only install: Numba will not cache there either
        pass


_drop_stale_cache()

# status codes of a solve
CONVERGED, MAX_ITER, DIVERGED, BAD_START = 0, 1, 2, 3
STATUS_NAMES = {CONVERGED: "converged", MAX_ITER: "max_iter", DIVERGED: "diverged", BAD_START: "bad_start"}

SolverOptions = namedtuple("SolverOptions", [
    "max_iter", "tol_cost", "tol_grad", "mu_init", "mu_min", "mu_max", "mu_factor", "ddp", "c1", "n_alpha",
    "alpha_factor", "alpha_keep_mu"])


def solver_options(max_iter: int = 10, tol_cost: float = 1e-7, tol_grad: float = 1e-5, mu_init: float = 1e-6,
                   mu_min: float = 1e-6, mu_max: float = 1e10, mu_factor: float = 1.6, ddp: bool = False,
                   c1: float = 1e-2, n_alpha: int = 10, alpha_factor: float = 0.5,
                   alpha_keep_mu: float = 0.0) -> SolverOptions:
    """Typed options for :func:`solve` (float / int / bool fields, so one compiled specialisation).

    ``alpha_keep_mu``: an accepted step shorter than this raises ``mu`` instead of lowering it
    (0 = Tassa's schedule: every accepted step lowers it).
    """
    return SolverOptions(int(max_iter), float(tol_cost), float(tol_grad), float(mu_init), float(mu_min),
                         float(mu_max), float(mu_factor), bool(ddp), float(c1), int(n_alpha), float(alpha_factor),
                         float(alpha_keep_mu))


Workspace = namedtuple("Workspace", [
    "X", "U", "Xn", "Un", "fx", "fu", "lx", "lu", "lxx", "luu", "lux", "k", "K", "Vx", "Vxx", "Qx", "Qu", "Qxx",
    "Quu", "Qux", "H", "tmp_nn", "tmp_mn", "hxx", "huu", "hux", "qp", "qpi", "u_lo", "u_hi", "costs", "info"])


def make_workspace(n: int, m: int, horizon: int, u_lo: np.ndarray, u_hi: np.ndarray, max_iter: int = 50) -> Workspace:
    """All arrays a solve touches, allocated once (the solve itself allocates nothing)."""
    T = int(horizon)
    z = np.zeros
    return Workspace(
        X=z((T + 1, n)), U=z((T, m)), Xn=z((T + 1, n)), Un=z((T, m)), fx=z((T, n, n)), fu=z((T, n, m)),
        lx=z((T + 1, n)), lu=z((T, m)), lxx=z((T + 1, n, n)), luu=z((T, m, m)), lux=z((T, m, n)),
        k=z((T, m)), K=z((T, m, n)), Vx=z(n), Vxx=z((n, n)), Qx=z(n), Qu=z(m), Qxx=z((n, n)), Quu=z((m, m)),
        Qux=z((m, n)), H=z((m, m)), tmp_nn=z((n, n)), tmp_mn=z((m, n)), hxx=z((n, n)), huu=z((m, m)),
        hux=z((m, n)), qp=z((m + 9, m)), qpi=np.zeros(m, dtype=np.int64),
        u_lo=np.asarray(u_lo, dtype=np.float64).copy(), u_hi=np.asarray(u_hi, dtype=np.float64).copy(),
        costs=z(max_iter + 1), info=z(8))


# --------------------------------------------------------------------------- problem protocol (overloaded)
def prob_step(prob, t, x, u, xn):
    """Write ``f_t(x, u)`` into ``xn``."""
    raise NotImplementedError


def prob_linearize(prob, t, x, u, fx, fu):
    """Write the Jacobians of ``f_t`` at (x, u)."""
    raise NotImplementedError


def prob_dyn_hessian(prob, t, x, u, lam, hxx, huu, hux):
    """Write the blocks of ``sum_i lam_i d2 f_t,i / d(x,u)2``."""
    raise NotImplementedError


def prob_stage_cost(prob, t, x, u):
    raise NotImplementedError


def prob_stage_derivs(prob, t, x, u, lx, lu, lxx, luu, lux):
    raise NotImplementedError


def prob_final_cost(prob, x):
    raise NotImplementedError


def prob_final_derivs(prob, x, lx, lxx):
    raise NotImplementedError


def prob_accept(prob, X, U):
    """Hook after a new nominal trajectory is accepted (e.g. to update projection warm starts)."""
    raise NotImplementedError


# --------------------------------------------------------------------------- rollouts
@njit(cache=True, error_model="numpy")
def rollout(prob, x0, U, X):
    """Open-loop rollout from ``x0``; returns the total cost (inf when not finite)."""
    T = U.shape[0]
    X[0, :] = x0
    J = 0.0
    for t in range(T):
        J += prob_stage_cost(prob, t, X[t], U[t])
        prob_step(prob, t, X[t], U[t], X[t + 1])
    J += prob_final_cost(prob, X[T])
    return J if np.isfinite(J) else np.inf


@njit(cache=True, error_model="numpy")
def trajectory_cost(prob, X, U):
    """Cost of a given trajectory (no rollout)."""
    T = U.shape[0]
    J = 0.0
    for t in range(T):
        J += prob_stage_cost(prob, t, X[t], U[t])
    J += prob_final_cost(prob, X[T])
    return J if np.isfinite(J) else np.inf


@njit(cache=True, error_model="numpy")
def _forward(prob, ws, alpha):
    """Closed-loop rollout of the update with step ``alpha`` into (Xn, Un); returns its cost."""
    X, U, Xn, Un, k, K = ws.X, ws.U, ws.Xn, ws.Un, ws.k, ws.K
    T, n = U.shape[0], X.shape[1]
    m = U.shape[1]
    Xn[0, :] = X[0]
    J = 0.0
    for t in range(T):
        for i in range(m):
            v = U[t, i] + alpha * k[t, i]
            for j in range(n):
                v += K[t, i, j] * (Xn[t, j] - X[t, j])
            Un[t, i] = min(max(v, ws.u_lo[i]), ws.u_hi[i])
        J += prob_stage_cost(prob, t, Xn[t], Un[t])
        prob_step(prob, t, Xn[t], Un[t], Xn[t + 1])
    J += prob_final_cost(prob, Xn[T])
    return J if np.isfinite(J) else np.inf


@njit(cache=True, error_model="numpy")
def _linearize_all(prob, ws):
    X, U = ws.X, ws.U
    T = U.shape[0]
    for t in range(T):
        prob_linearize(prob, t, X[t], U[t], ws.fx[t], ws.fu[t])
        prob_stage_derivs(prob, t, X[t], U[t], ws.lx[t], ws.lu[t], ws.lxx[t], ws.luu[t], ws.lux[t])
    prob_final_derivs(prob, X[T], ws.lx[T], ws.lxx[T])


# --------------------------------------------------------------------------- small dense linear algebra
@njit(cache=True, error_model="numpy")
def _cholesky_free(H, free, L):
    """In-place lower Cholesky factor of ``H[free, free]`` into ``L`` (same indexing); False if not PD."""
    m = H.shape[0]
    for i in range(m):
        if not free[i]:
            continue
        for j in range(i + 1):
            if not free[j]:
                continue
            s = H[i, j]
            for k in range(j):
                if free[k]:
                    s -= L[i, k] * L[j, k]
            if i == j:
                if not s > 0.0:
                    return False
                L[i, i] = np.sqrt(s)
            else:
                L[i, j] = s / L[j, j]
    return True


@njit(cache=True, error_model="numpy")
def _chol_solve_free(L, free, b, out):
    """Solve ``H[free,free] out[free] = b[free]`` with the factor from :func:`_cholesky_free`; out[~free] = 0."""
    m = L.shape[0]
    for i in range(m):
        if not free[i]:
            out[i] = 0.0
            continue
        s = b[i]
        for k in range(i):
            if free[k]:
                s -= L[i, k] * out[k]
        out[i] = s / L[i, i]
    for i in range(m - 1, -1, -1):
        if not free[i]:
            continue
        s = out[i]
        for k in range(i + 1, m):
            if free[k]:
                s -= L[k, i] * out[k]
        out[i] = s / L[i, i]


@njit(cache=True, error_model="numpy")
def _qp_value(H, g, x):
    m = x.shape[0]
    v = 0.0
    for i in range(m):
        v += g[i] * x[i]
        for j in range(m):
            v += 0.5 * x[i] * H[i, j] * x[j]
    return v


@njit(cache=True, error_model="numpy")
def box_qp(H, g, lo, hi, x, free, scratch, max_iter=50):
    """Projected-Newton solve of ``min 0.5 x'Hx + g'x`` s.t. ``lo <= x <= hi`` (Bertsekas 1982; Tassa 2014).

    ``x`` holds the warm start and receives the solution, ``free`` (int 0/1) the free set, and
    ``scratch[0:m]`` the Cholesky factor rows of ``H[free, free]`` (rows ``m..m+3`` are work space).
    Returns False when the free block is not positive definite.
    """
    m = x.shape[0]
    L = scratch[0:m]
    grad, step, trial, rhs = scratch[m], scratch[m + 1], scratch[m + 2], scratch[m + 3]
    for i in range(m):
        x[i] = min(max(x[i], lo[i]), hi[i])
    old_free_count = -1
    for it in range(max_iter):
        n_free = 0
        for i in range(m):
            gi = g[i]
            for j in range(m):
                gi += H[i, j] * x[j]
            grad[i] = gi
            clamped = (x[i] <= lo[i] and gi > 0.0) or (x[i] >= hi[i] and gi < 0.0)
            free[i] = 0 if clamped else 1
            n_free += free[i]
        if n_free == 0:
            return True
        if not _cholesky_free(H, free, L):
            return False
        gnorm = 0.0
        for i in range(m):
            rhs[i] = -grad[i] if free[i] else 0.0
            if free[i]:
                gnorm += grad[i] * grad[i]
        if gnorm < 1e-26 and n_free == old_free_count:
            return True
        old_free_count = n_free
        _chol_solve_free(L, free, rhs, step)
        slope = 0.0
        for i in range(m):
            slope += grad[i] * step[i]
        value = _qp_value(H, g, x)
        alpha = 1.0
        accepted = False
        while alpha > 1e-12:
            for i in range(m):
                trial[i] = min(max(x[i] + alpha * step[i], lo[i]), hi[i])
            if _qp_value(H, g, trial) - value <= 0.1 * alpha * slope:
                accepted = True
                break
            alpha *= 0.5
        if not accepted:
            return True
        moved = 0.0
        for i in range(m):
            moved = max(moved, abs(trial[i] - x[i]))
            x[i] = trial[i]
        if moved < 1e-13:
            break
    # factor of the final free set, for the feedback gains
    for i in range(m):
        gi = g[i]
        for j in range(m):
            gi += H[i, j] * x[j]
        clamped = (x[i] <= lo[i] and gi > 0.0) or (x[i] >= hi[i] and gi < 0.0)
        free[i] = 0 if clamped else 1
    return _cholesky_free(H, free, L)


# --------------------------------------------------------------------------- backward pass
@njit(cache=True, error_model="numpy")
def _backward(prob, ws, mu, ddp):
    """One backward pass at regularisation ``mu``; returns (ok, dV1, dV2)."""
    X, U = ws.X, ws.U
    T, n, m = U.shape[0], X.shape[1], U.shape[1]
    Vx, Vxx, Qx, Qu, Qxx, Quu, Qux, H = ws.Vx, ws.Vxx, ws.Qx, ws.Qu, ws.Qxx, ws.Quu, ws.Qux, ws.H
    A, B = ws.tmp_nn, ws.tmp_mn
    qp, free = ws.qp, ws.qpi
    lo, hi, du, kcol, ksol = qp[m + 4], qp[m + 5], qp[m + 6], qp[m + 7], qp[m + 8]
    Vx[:] = ws.lx[T]
    Vxx[:, :] = ws.lxx[T]
    dV1 = 0.0
    dV2 = 0.0
    for t in range(T - 1, -1, -1):
        fx, fu = ws.fx[t], ws.fu[t]
        # A = Vxx fx (n x n), B = fu' Vxx (m x n)
        for i in range(n):
            for j in range(n):
                s = 0.0
                for l in range(n):
                    s += Vxx[i, l] * fx[l, j]
                A[i, j] = s
        for i in range(m):
            for j in range(n):
                s = 0.0
                for l in range(n):
                    s += fu[l, i] * Vxx[l, j]
                B[i, j] = s
        for i in range(n):
            s = ws.lx[t, i]
            for l in range(n):
                s += fx[l, i] * Vx[l]
            Qx[i] = s
            for j in range(n):
                s = ws.lxx[t, i, j]
                for l in range(n):
                    s += fx[l, i] * A[l, j]
                Qxx[i, j] = s
        for i in range(m):
            s = ws.lu[t, i]
            for l in range(n):
                s += fu[l, i] * Vx[l]
            Qu[i] = s
            for j in range(m):
                s = ws.luu[t, i, j]
                for l in range(n):
                    s += B[i, l] * fu[l, j]
                Quu[i, j] = s
            for j in range(n):
                s = ws.lux[t, i, j]
                for l in range(n):
                    s += B[i, l] * fx[l, j]
                Qux[i, j] = s
        if ddp:
            prob_dyn_hessian(prob, t, X[t], U[t], Vx, ws.hxx, ws.huu, ws.hux)
            for i in range(n):
                for j in range(n):
                    Qxx[i, j] += ws.hxx[i, j]
            for i in range(m):
                for j in range(m):
                    Quu[i, j] += ws.huu[i, j]
                for j in range(n):
                    Qux[i, j] += ws.hux[i, j]
        for i in range(m):
            for j in range(m):
                H[i, j] = 0.5 * (Quu[i, j] + Quu[j, i])
            H[i, i] += mu
            lo[i] = ws.u_lo[i] - U[t, i]
            hi[i] = ws.u_hi[i] - U[t, i]
            du[i] = ws.k[t, i]  # warm start of the box QP: last iteration's step
        if not box_qp(H, Qu, lo, hi, du, free, qp):
            return False, 0.0, 0.0
        for i in range(m):
            ws.k[t, i] = du[i]
        # K[free] = -H_ff^-1 Qux[free], K[clamped] = 0
        for j in range(n):
            for i in range(m):
                kcol[i] = -Qux[i, j] if free[i] else 0.0
            _chol_solve_free(qp[0:m], free, kcol, ksol)
            for i in range(m):
                ws.K[t, i, j] = ksol[i] if free[i] else 0.0
        # value function (unregularised Q terms)
        K, k = ws.K[t], ws.k[t]
        for i in range(m):
            dV1 += k[i] * Qu[i]
            for j in range(m):
                dV2 += 0.5 * k[i] * Quu[i, j] * k[j]
        for i in range(n):
            s = Qx[i]
            for a in range(m):
                qk = 0.0
                for b in range(m):
                    qk += Quu[a, b] * k[b]
                s += K[a, i] * qk + K[a, i] * Qu[a] + Qux[a, i] * k[a]
            Vx[i] = s
        for i in range(n):
            for j in range(i, n):
                s = Qxx[i, j]
                for a in range(m):
                    kq = 0.0
                    for b in range(m):
                        kq += Quu[a, b] * K[b, j]
                    s += K[a, i] * kq + K[a, i] * Qux[a, j] + Qux[a, i] * K[a, j]
                Vxx[i, j] = s
        for i in range(n):
            for j in range(i):
                Vxx[i, j] = Vxx[j, i]
            if not np.isfinite(Vx[i]):
                return False, 0.0, 0.0
    return True, dV1, dV2


# --------------------------------------------------------------------------- the solve
@njit(cache=True, error_model="numpy")
def solve(prob, x0, ws, opts):
    """Optimise ``ws.U`` (warm start in, solution out) from ``x0``; ``ws.X`` gets the trajectory.

    Returns (cost, iterations, status). ``ws.k``/``ws.K`` hold the last step and feedback gains,
    ``ws.costs[:iterations+1]`` the cost after each iteration (monotone decreasing for a problem
    whose accept hook keeps the cost fixed; a refreshed reference re-evaluates it),
    ``ws.info`` = [cost, iterations, status, mu, backward passes, forward rollouts, last alpha, grad norm].
    """
    T = ws.U.shape[0]
    m = ws.U.shape[1]
    for t in range(T):
        for i in range(m):
            ws.U[t, i] = min(max(ws.U[t, i], ws.u_lo[i]), ws.u_hi[i])
            ws.k[t, i] = 0.0
    J = rollout(prob, x0, ws.U, ws.X)
    ws.costs[0] = J
    n_back = 0
    n_fwd = 1
    alpha = 0.0
    gnorm = np.inf
    mu = opts.mu_init
    delta = 1.0
    status = MAX_ITER
    if not np.isfinite(J):
        _set_info(ws, J, 0, BAD_START, mu, n_back, n_fwd, alpha, gnorm)
        return J, 0, BAD_START
    prob_accept(prob, ws.X, ws.U)
    J = trajectory_cost(prob, ws.X, ws.U)  # the accept hook may refresh the cost's reference
    ws.costs[0] = J
    iters = 0
    linearized = False
    max_iter = min(opts.max_iter, ws.costs.shape[0] - 1)
    while iters < max_iter:
        if not linearized:
            _linearize_all(prob, ws)
            linearized = True
        # backward pass, raising mu until it succeeds
        ok = False
        dV1 = 0.0
        dV2 = 0.0
        while True:
            ok, dV1, dV2 = _backward(prob, ws, mu, opts.ddp)
            n_back += 1
            if ok:
                break
            delta = max(opts.mu_factor, delta * opts.mu_factor)
            mu = max(opts.mu_min, mu * delta)
            if mu > opts.mu_max:
                break
        if not ok:
            status = DIVERGED
            break
        gnorm = 0.0
        for t in range(T):
            g = 0.0
            for i in range(m):
                g = max(g, abs(ws.k[t, i]) / (abs(ws.U[t, i]) + 1.0))
            gnorm += g
        gnorm /= T
        if (gnorm < opts.tol_grad and mu < 1e-5) or -(dV1 + dV2) < opts.tol_cost * max(1.0, abs(J)):
            status = CONVERGED  # small step, or a full step would gain less than the cost tolerance
            break
        # line search
        accepted = False
        Jn = np.inf
        alpha = 1.0
        for _ in range(opts.n_alpha):
            Jn = _forward(prob, ws, alpha)
            n_fwd += 1
            expected = -(alpha * dV1 + alpha * alpha * dV2)
            if expected > 0.0:
                z = (J - Jn) / expected
                if z > opts.c1:
                    accepted = True
                    break
            elif Jn < J:
                accepted = True
                break
            alpha *= opts.alpha_factor
        iters += 1
        if accepted:
            if alpha >= opts.alpha_keep_mu:  # the quadratic model was good: less regularisation
                delta = min(1.0 / opts.mu_factor, delta / opts.mu_factor)
                mu = mu * delta if mu * delta > opts.mu_min else 0.0
            else:  # accepted only after backtracking: a trust-region-like increase
                delta = max(opts.mu_factor, delta * opts.mu_factor)
                mu = max(opts.mu_min, mu * delta)
            dJ = J - Jn
            ws.X[:, :] = ws.Xn
            ws.U[:, :] = ws.Un
            J = Jn
            ws.costs[iters] = J
            linearized = False
            prob_accept(prob, ws.X, ws.U)
            J = trajectory_cost(prob, ws.X, ws.U)
            ws.costs[iters] = J
            if dJ < opts.tol_cost * max(1.0, abs(J)):
                status = CONVERGED
                break
        else:
            ws.costs[iters] = J
            delta = max(opts.mu_factor, delta * opts.mu_factor)
            mu = max(opts.mu_min, mu * delta)
            if mu > opts.mu_max:
                status = DIVERGED
                break
    _set_info(ws, J, iters, status, mu, n_back, n_fwd, alpha, gnorm)
    return J, iters, status


@njit(cache=True)
def _set_info(ws, J, iters, status, mu, n_back, n_fwd, alpha, gnorm):
    ws.info[0] = J
    ws.info[1] = iters
    ws.info[2] = status
    ws.info[3] = mu
    ws.info[4] = n_back
    ws.info[5] = n_fwd
    ws.info[6] = alpha
    ws.info[7] = gnorm


@njit(cache=True)
def shift_plan(U, K, fill_last):
    """Warm start: drop the first step of ``U`` and ``K``; the last control repeats (or zero)."""
    T = U.shape[0]
    for t in range(T - 1):
        U[t, :] = U[t + 1]
        K[t, :, :] = K[t + 1]
    if not fill_last:
        U[T - 1, :] = 0.0
    K[T - 1, :, :] = 0.0


# --------------------------------------------------------------------------- problem registration
def register_problem(cls, *, step, linearize, dyn_hessian, stage_cost, stage_derivs, final_cost, final_derivs,
                     accept=None) -> None:
    """Bind the ``prob_*`` stubs to the njit functions of problem namedtuple class ``cls``.

    The overloads hand Numba the functions' Python source (``py_func``), so each is compiled
    once, for the caller's specialisation, without a wrapper. The implementations' arguments are
    named as the stubs'.
    """
    from numba import types
    from numba.extending import overload

    py = {name: getattr(f, "py_func", f) for name, f in (
        ("step", step), ("linearize", linearize), ("dyn_hessian", dyn_hessian), ("stage_cost", stage_cost),
        ("stage_derivs", stage_derivs), ("final_cost", final_cost), ("final_derivs", final_derivs),
        ("accept", accept if accept is not None else _no_accept))}
    opts = {"error_model": "numpy"}

    def mine(prob) -> bool:
        return isinstance(prob, types.BaseNamedTuple) and prob.instance_class is cls

    @overload(prob_step, jit_options=opts)
    def _step(prob, t, x, u, xn):
        return py["step"] if mine(prob) else None

    @overload(prob_linearize, jit_options=opts)
    def _lin(prob, t, x, u, fx, fu):
        return py["linearize"] if mine(prob) else None

    @overload(prob_dyn_hessian, jit_options=opts)
    def _hess(prob, t, x, u, lam, hxx, huu, hux):
        return py["dyn_hessian"] if mine(prob) else None

    @overload(prob_stage_cost, jit_options=opts)
    def _cost(prob, t, x, u):
        return py["stage_cost"] if mine(prob) else None

    @overload(prob_stage_derivs, jit_options=opts)
    def _cder(prob, t, x, u, lx, lu, lxx, luu, lux):
        return py["stage_derivs"] if mine(prob) else None

    @overload(prob_final_cost, jit_options=opts)
    def _fcost(prob, x):
        return py["final_cost"] if mine(prob) else None

    @overload(prob_final_derivs, jit_options=opts)
    def _fder(prob, x, lx, lxx):
        return py["final_derivs"] if mine(prob) else None

    @overload(prob_accept, jit_options=opts)
    def _acc(prob, X, U):
        return py["accept"] if mine(prob) else None


def _no_accept(prob, X, U):
    return None
