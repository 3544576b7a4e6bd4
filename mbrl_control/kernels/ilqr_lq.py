"""Time-invariant linear-quadratic problem for the generic iLQR solve (reference problem of the tests).

``x' = A x + B u``, stage cost ``0.5 x'Qx + 0.5 u'Ru + u'Nx``, final cost ``0.5 x'Qf x``. On it,
one unregularised iLQR iteration is exactly the discrete Riccati recursion.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from mbrl_control.kernels.ilqr import register_problem

LQProblem = namedtuple("LQProblem", ["A", "B", "Q", "R", "N", "Qf"])


def lq_problem(A, B, Q, R, Qf, N=None) -> LQProblem:
    n, m = np.shape(B)
    f = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    return LQProblem(f(A), f(B), f(Q), f(R), f(np.zeros((m, n)) if N is None else N), f(Qf))


@njit(cache=True)
def _step(prob, t, x, u, xn):
    n, m = prob.B.shape
    for i in range(n):
        s = 0.0
        for j in range(n):
            s += prob.A[i, j] * x[j]
        for j in range(m):
            s += prob.B[i, j] * u[j]
        xn[i] = s


@njit(cache=True)
def _linearize(prob, t, x, u, fx, fu):
    fx[:, :] = prob.A
    fu[:, :] = prob.B


@njit(cache=True)
def _dyn_hessian(prob, t, x, u, lam, hxx, huu, hux):
    hxx[:, :] = 0.0
    huu[:, :] = 0.0
    hux[:, :] = 0.0


@njit(cache=True)
def _quad(M, a, b):
    s = 0.0
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            s += a[i] * M[i, j] * b[j]
    return s


@njit(cache=True)
def _stage_cost(prob, t, x, u):
    return 0.5 * _quad(prob.Q, x, x) + 0.5 * _quad(prob.R, u, u) + _quad(prob.N, u, x)


@njit(cache=True)
def _stage_derivs(prob, t, x, u, lx, lu, lxx, luu, lux):
    n, m = prob.B.shape
    for i in range(n):
        s = 0.0
        for j in range(n):
            s += prob.Q[i, j] * x[j]
        for j in range(m):
            s += prob.N[j, i] * u[j]
        lx[i] = s
    for i in range(m):
        s = 0.0
        for j in range(m):
            s += prob.R[i, j] * u[j]
        for j in range(n):
            s += prob.N[i, j] * x[j]
        lu[i] = s
    lxx[:, :] = prob.Q
    luu[:, :] = prob.R
    lux[:, :] = prob.N


@njit(cache=True)
def _final_cost(prob, x):
    return 0.5 * _quad(prob.Qf, x, x)


@njit(cache=True)
def _final_derivs(prob, x, lx, lxx):
    n = x.shape[0]
    for i in range(n):
        s = 0.0
        for j in range(n):
            s += prob.Qf[i, j] * x[j]
        lx[i] = s
    lxx[:, :] = prob.Qf


register_problem(LQProblem, step=_step, linearize=_linearize, dyn_hessian=_dyn_hessian, stage_cost=_stage_cost,
                 stage_derivs=_stage_derivs, final_cost=_final_cost, final_derivs=_final_derivs)
