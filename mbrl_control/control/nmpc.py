"""CasADi multiple-shooting NMPC solved by IPOPT: the optimisation reference for iLQR/DDP.

Two problems share one transcription (:class:`MultipleShootingNLP`): decision variables
``X_0..X_T`` and ``U_0..U_{T-1}``, equality constraints ``X_0 = x0`` and
``X_{t+1} = f(X_t, U_t)``, box bounds on ``U``, exact Hessian (IPOPT default), MUMPS, warm start
of primal and dual variables from the previous solution shifted by one step.

* :class:`BicycleTrackNMPC`: ``../shared/bench/PROBLEM.md`` (the bench reference).
* :class:`NMPCController`: the car on a race track with the prediction model's equations
  (:func:`mbrl_control.models.derivatives.single_track_derivative`, RK4 as the torch model) and
  the same smooth racing cost as iLQR (:mod:`mbrl_control.control.racing_cost`, CasADi form),
  usable as ``--controller nmpc`` (not real time at 50 Hz; a reference).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams, dataclass_from_dict
from mbrl_control.control.base import Controller

LOG = logging.getLogger("mbrl_control.control.nmpc")


def _casadi():
    try:
        import casadi as ca
    except ImportError:  # pragma: no cover - casadi is pinned in requirements.txt
        raise MbrlError("the NMPC needs casadi (pip install casadi==3.8.2)") from None
    return ca


class MultipleShootingNLP:
    """``min sum_t stage(t, X_t, U_t) + final(X_T)`` s.t. shooting constraints, solved by IPOPT.

    ``step(x, u)`` and the costs are CasADi-callable on SX/MX; ``stage`` receives the time index
    and a parameter vector ``P`` (the problem's per-solve data, e.g. the reference) as well.
    """

    def __init__(self, n: int, m: int, horizon: int, step, stage, final, u_lo, u_hi, n_param: int = 0,
                 ipopt_options: dict | None = None) -> None:
        ca = _casadi()
        self.n, self.m, self.T = n, m, int(horizon)
        X = ca.SX.sym("X", n, self.T + 1)
        U = ca.SX.sym("U", m, self.T)
        x0 = ca.SX.sym("x0", n)
        P = ca.SX.sym("P", max(n_param, 1))
        J = 0
        g = [X[:, 0] - x0]
        for t in range(self.T):
            J = J + stage(t, X[:, t], U[:, t], P)
            g.append(X[:, t + 1] - step(X[:, t], U[:, t]))
        J = J + final(X[:, self.T], P)
        w = ca.vertcat(ca.vec(X), ca.vec(U))
        nlp = {"x": w, "f": J, "g": ca.vertcat(*g), "p": ca.vertcat(x0, P)}
        opts = {"ipopt.print_level": 0, "print_time": False, "ipopt.sb": "yes", "ipopt.linear_solver": "mumps",
                "ipopt.warm_start_init_point": "yes", "ipopt.mu_init": 1e-3,
                "ipopt.warm_start_bound_push": 1e-8, "ipopt.warm_start_mult_bound_push": 1e-8}
        opts.update(ipopt_options or {})
        self.solver = ca.nlpsol("nmpc", "ipopt", nlp, opts)
        nx = n * (self.T + 1)
        self.lbw = np.concatenate([np.full(nx, -np.inf), np.tile(np.asarray(u_lo, float), self.T)])
        self.ubw = np.concatenate([np.full(nx, np.inf), np.tile(np.asarray(u_hi, float), self.T)])
        self.n_g = n * (self.T + 1)
        self.w = None
        self.lam_w = None
        self.lam_g = None
        self.n_param = n_param
        self.last_iterations = 0
        self.last_success = False

    def solve(self, x0: np.ndarray, U_guess: np.ndarray | None = None, param: np.ndarray | None = None):
        """(X (T+1, n), U (T, m)) of the optimum, warm-started from the last solution shifted."""
        n, m, T = self.n, self.m, self.T
        if self.w is None or U_guess is not None:
            U0 = np.zeros((T, m)) if U_guess is None else np.asarray(U_guess, float)
            X0 = np.tile(np.asarray(x0, float), (T + 1, 1))
            self.w = np.concatenate([X0.reshape(-1), U0.reshape(-1)])
            self.lam_w = np.zeros_like(self.w)
            self.lam_g = np.zeros(self.n_g)
        p = np.concatenate([np.asarray(x0, float), np.zeros(max(self.n_param, 1)) if param is None else param])
        sol = self.solver(x0=self.w, lbx=self.lbw, ubx=self.ubw, lbg=0.0, ubg=0.0, p=p,
                          lam_x0=self.lam_w, lam_g0=self.lam_g)
        stats = self.solver.stats()
        self.last_iterations = int(stats.get("iter_count", 0))
        self.last_success = bool(stats.get("success", False))
        w = np.asarray(sol["x"]).reshape(-1)
        X = w[: n * (T + 1)].reshape(T + 1, n)
        U = w[n * (T + 1):].reshape(T, m)
        self._store_shifted(X, U, np.asarray(sol["lam_x"]).reshape(-1), np.asarray(sol["lam_g"]).reshape(-1))
        return X, U

    def _store_shifted(self, X, U, lam_w, lam_g) -> None:
        """Warm start for the next solve: everything shifted one step, last step repeated."""
        n, m, T = self.n, self.m, self.T
        Xs = np.vstack([X[1:], X[-1:]])
        Us = np.vstack([U[1:], U[-1:]])
        lx = lam_w[: n * (T + 1)].reshape(T + 1, n)
        lu = lam_w[n * (T + 1):].reshape(T, m)
        lg = lam_g.reshape(T + 1, n)
        self.w = np.concatenate([Xs.reshape(-1), Us.reshape(-1)])
        self.lam_w = np.concatenate([np.vstack([lx[1:], lx[-1:]]).reshape(-1), np.vstack([lu[1:], lu[-1:]]).reshape(-1)])
        self.lam_g = np.vstack([lg[1:], lg[-1:]]).reshape(-1)


class BicycleTrackNMPC:
    """PROBLEM.md bicycle-track as a multiple-shooting NLP; ``__call__(x) -> u`` for the closed loop."""

    def __init__(self, horizon: int | None = None, ipopt_options: dict | None = None) -> None:
        from mbrl_control.control import bicycle_track as bt
        from mbrl_control.models.derivatives import bicycle_track_state_cost, bicycle_track_step

        self.bt = bt
        T = bt.HORIZON if horizon is None else int(horizon)
        w_u = np.zeros(2)
        w_u[bt.ACC], w_u[bt.STEER] = bt.W_ACCEL, bt.W_STEER

        def stage(t, x, u, P):
            c = w_u[0] * u[0] ** 2 + w_u[1] * u[1] ** 2
            return c + bicycle_track_state_cost(x) if t > 0 else c

        self.nlp = MultipleShootingNLP(4, 2, T, bicycle_track_step, stage, lambda x, P: bicycle_track_state_cost(x),
                                       bt.U_MIN, bt.U_MAX, ipopt_options=ipopt_options)
        self.iterations: list[int] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        X, U = self.nlp.solve(x)
        self.iterations.append(self.nlp.last_iterations)
        return U[0].copy()
