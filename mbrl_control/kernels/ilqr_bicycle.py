"""The bicycle-track problem (``../shared/bench/PROBLEM.md``) for the generic iLQR solve.

Model and state cost derivatives are the CasADi-generated kernels of :mod:`.casadi_codegen`
(built from :mod:`mbrl_control.models.bicycle_track_spec`'s constants). The trajectory cost
``J = sum_t l(x_{t+1}, u_t)`` is written in the solver's stage form as
``l_t(x_t, u_t) = [t > 0] q(x_t) + r(u_t)`` plus the final cost ``q(x_T)`` (``q(x_0)`` is a
constant and dropped; :func:`problem_cost` adds nothing else).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from mbrl_control.models import bicycle_track_spec as bt
from mbrl_control.kernels.casadi_codegen import ilqr_derivatives
from mbrl_control.kernels.ilqr import register_problem

gen = ilqr_derivatives()  # generated derivative kernels; a module global, so Numba resolves gen.<fn>

BicycleTrackProblem = namedtuple("BicycleTrackProblem", ["w_u", "jac", "hess", "q_hess", "lam"])
N_STATE, N_CONTROL = 4, 2


def bicycle_track_problem() -> BicycleTrackProblem:
    """The problem with its scratch arrays (the control weights in the problem's (a, delta) order)."""
    w_u = np.zeros(N_CONTROL)
    w_u[bt.ACC], w_u[bt.STEER] = bt.W_ACCEL, bt.W_STEER
    return BicycleTrackProblem(w_u=w_u, jac=np.zeros((N_STATE, N_STATE + N_CONTROL)),
                               hess=np.zeros((N_STATE + N_CONTROL, N_STATE + N_CONTROL)),
                               q_hess=np.zeros((N_STATE, N_STATE)), lam=np.zeros(N_STATE))


@njit(cache=True, error_model="numpy")
def _step(prob, t, x, u, xn):
    gen.bt_step_f(x, u, xn)


@njit(cache=True, error_model="numpy")
def _linearize(prob, t, x, u, fx, fu):
    gen.bt_step_jac(x, u, prob.jac)
    for i in range(N_STATE):
        for j in range(N_STATE):
            fx[i, j] = prob.jac[i, j]
        for j in range(N_CONTROL):
            fu[i, j] = prob.jac[i, N_STATE + j]


@njit(cache=True, error_model="numpy")
def _dyn_hessian(prob, t, x, u, lam, hxx, huu, hux):
    gen.bt_step_hess(x, u, lam, prob.hess)
    n = N_STATE
    for i in range(n):
        for j in range(n):
            hxx[i, j] = prob.hess[i, j]
    for i in range(N_CONTROL):
        for j in range(N_CONTROL):
            huu[i, j] = prob.hess[n + i, n + j]
        for j in range(n):
            hux[i, j] = prob.hess[n + i, j]


@njit(cache=True, error_model="numpy")
def _stage_cost(prob, t, x, u):
    c = prob.w_u[0] * u[0] * u[0] + prob.w_u[1] * u[1] * u[1]
    if t > 0:
        prob.lam[0] = 0.0
        gen.bt_cost_value(x, prob.lam[0:1])
        c += prob.lam[0]
    return c


@njit(cache=True, error_model="numpy")
def _stage_derivs(prob, t, x, u, lx, lu, lxx, luu, lux):
    if t > 0:
        gen.bt_cost_grad(x, lx)
        gen.bt_cost_hess(x, lxx)
    else:
        lx[:] = 0.0
        lxx[:, :] = 0.0
    for i in range(N_CONTROL):
        lu[i] = 2.0 * prob.w_u[i] * u[i]
        for j in range(N_CONTROL):
            luu[i, j] = 2.0 * prob.w_u[i] if i == j else 0.0
    lux[:, :] = 0.0


@njit(cache=True, error_model="numpy")
def _final_cost(prob, x):
    gen.bt_cost_value(x, prob.lam[0:1])
    return prob.lam[0]


@njit(cache=True, error_model="numpy")
def _final_derivs(prob, x, lx, lxx):
    gen.bt_cost_grad(x, lx)
    gen.bt_cost_hess(x, lxx)


register_problem(BicycleTrackProblem, step=_step, linearize=_linearize, dyn_hessian=_dyn_hessian,
                 stage_cost=_stage_cost, stage_derivs=_stage_derivs, final_cost=_final_cost,
                 final_derivs=_final_derivs)
