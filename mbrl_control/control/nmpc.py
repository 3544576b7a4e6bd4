"""CasADi multiple-shooting NMPC solved by IPOPT: the optimisation reference for iLQR/DDP.

Every problem shares one transcription (:class:`MultipleShootingNLP`): decision variables
``X_0..X_T`` and ``U_0..U_{T-1}``, equality constraints ``X_0 = x0`` and
``X_{t+1} = f(X_t, U_t)``, box bounds on ``U``, exact Hessian (IPOPT default), MUMPS, warm start
of primal and dual variables from the previous solution shifted by one step.

* :class:`mbrl_control.control.problem_solvers.ProblemNMPC`: any smooth ``ControlProblem``
  (e.g. ``../shared/bench/PROBLEM.md``'s, :mod:`mbrl_control.benchmarks.bicycle_track.gradient`).
* :class:`NMPCController`: the car on a race track with the prediction model's equations
  (the model's one written definition through
  :func:`mbrl_control.models.derivatives.single_track_derivative`, RK4 as the torch model) and
  the same smooth racing cost as iLQR (:mod:`mbrl_control.problem.costs.contouring`, CasADi form),
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


# --------------------------------------------------------------------------- the car on a track
@dataclass(frozen=True)
class NMPCConfig:
    """``nmpc`` options; every other key is a cost option of :class:`mbrl_control.control.ilqr.ILQRConfig`."""

    horizon: int = 50
    ipopt_max_iter: int = 30  # the car model has kinks (power limit, clamps): IPOPT may not reach tol
    ipopt_tol: float = 1e-6

    def validate(self) -> None:
        if self.horizon < 2 or self.ipopt_max_iter < 1 or not self.ipopt_tol > 0:
            raise MbrlError("nmpc: need horizon >= 2, ipopt_max_iter >= 1, ipopt_tol > 0")


def casadi_model_step(model):
    """``step(x, u)`` in CasADi for a torch prediction model (kind, parameters, RK4/Euler substeps, residual)."""
    from mbrl_control.control.ilqr import model_description
    from mbrl_control.models.derivatives import single_track_derivative

    ca = _casadi()
    kind, pvec, dt_s, substeps, rk4, residual = model_description(model)
    p = [float(v) for v in pvec]  # PARAM_NAMES order
    h = dt_s / substeps

    def f(x, u):
        return single_track_derivative(kind, x, u, p)

    def step(x, u):
        y = x
        for _ in range(substeps):
            k1 = f(y, u)
            if rk4:
                k2 = f(y + 0.5 * h * k1, u)
                k3 = f(y + 0.5 * h * k2, u)
                k4 = f(y + h * k3, u)
                y = y + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            else:
                y = y + h * k1
        if residual is not None:
            y = y + _casadi_residual(ca, residual, x, u)
        return y

    return step


def _casadi_residual(ca, res: dict, x, u):
    """Ensemble-mean residual correction scattered into (V, YAW_RATE, SLIP): the residual's one
    definition (:func:`mbrl_control.models.residual_definition.ensemble_mean`) in CasADi."""
    from mbrl_control.models import residual_definition as rd
    from mbrl_control.models.layout import RESIDUAL_INPUT_STATES, STATE_DIM, VELOCITY_STATES
    from mbrl_control.ops import casadi_ops

    feats = ca.vertcat(*[x[i] for i in RESIDUAL_INPUT_STATES], u[0], u[1])
    net = rd.network(res["weights"], res["biases"], *(ca.DM(res[k]) for k in ("in_mean", "in_std", "out_mean", "out_std")))
    corr = rd.ensemble_mean(casadi_ops, net, feats)
    out = [0] * STATE_DIM
    for j, idx in enumerate(VELOCITY_STATES):
        out[idx] = corr[j]
    return ca.vertcat(*out)


class NMPCController(Controller):
    """Multiple-shooting NMPC with the iLQR controller's model and smooth racing cost (reference per solve)."""

    name = "nmpc"

    def __init__(self, params: VehicleParams, control_dt_s: float, track, model, options: dict | None = None) -> None:
        super().__init__(params, control_dt_s)
        from mbrl_control.control.ilqr import ILQRConfig, control_box, model_description, track_spline
        from mbrl_control.kernels.ilqr_vehicle import N_REF, make_vehicle_problem
        from mbrl_control.models.layout import CONTROL_NAMES, STATE_NAMES
        from mbrl_control.problem.costs.contouring import casadi_cost

        options = dict(options or {})
        own = {k: options.pop(k) for k in ("horizon", "ipopt_max_iter", "ipopt_tol") if k in options}
        self.config = dataclass_from_dict(NMPCConfig, own, "nmpc")
        cost_cfg = dataclass_from_dict(ILQRConfig, {**options, "horizon": self.config.horizon}, "nmpc")
        if model is None:
            raise MbrlError("nmpc needs a prediction model")
        self.track = track
        self._model = model
        T = self.config.horizon
        kind, pvec, dt_s, substeps, rk4, residual = model_description(model)
        if abs(dt_s - control_dt_s) > 1e-9:
            raise MbrlError(f"nmpc: the model steps {dt_s} s but the control period is {control_dt_s} s")
        weights = cost_cfg.weight_vector(params, dt_s)
        spline = track_spline(track, cost_cfg.cost_config(), cost_cfg.centerline_smoothing_points)
        self.prob = make_vehicle_problem(kind, pvec, dt_s, substeps, rk4, T, weights, spline, residual)
        self.u_lo, self.u_hi = control_box(params)
        w = [float(v) for v in weights]

        def cost(x, ref, u=None):
            return casadi_cost(STATE_NAMES, CONTROL_NAMES, x, ref, w, u)

        def stage(t, x, u, P):
            ref = P[t * N_REF:(t + 1) * N_REF]
            return cost(x, ref, u) if t > 0 else cost(x, ref, u) - cost(x, ref)

        self.nlp = MultipleShootingNLP(
            7, 2, T, casadi_model_step(model), stage, lambda x, P: cost(x, P[T * N_REF:]),
            self.u_lo, self.u_hi, n_param=(T + 1) * N_REF,
            ipopt_options={"ipopt.max_iter": self.config.ipopt_max_iter, "ipopt.tol": self.config.ipopt_tol,
                           "ipopt.acceptable_tol": 100 * self.config.ipopt_tol, "ipopt.acceptable_iter": 3,
                           "ipopt.mu_strategy": "adaptive"})
        self._X = None
        self._U = None
        self.last_iterations = 0
        self.failures = 0

    @property
    def model(self):
        return self._model

    def reset(self, state: np.ndarray) -> None:
        self._X = None
        self._U = None
        self.nlp.w = None

    def step(self, state: np.ndarray) -> np.ndarray:
        from mbrl_control.control.base import safe_stop_command
        from mbrl_control.kernels.ilqr_vehicle import update_reference
        from mbrl_control.models.layout import S

        x = np.asarray(state, dtype=np.float64)
        try:
            T = self.config.horizon
            if self.nlp.w is None:
                guess = np.tile(x, (T + 1, 1))
            else:
                guess = self.nlp.w[: 7 * (T + 1)].reshape(T + 1, 7).copy()
                guess[0] = x
            self.prob.ref_s[0] = float(self.track.project(x[[S.X, S.Y]]).progress_m)
            update_reference(self.prob, guess)
            X, U = self.nlp.solve(x, param=self.prob.ref.reshape(-1))
            self.last_iterations = self.nlp.last_iterations
            if not np.all(np.isfinite(U)):
                raise FloatingPointError("non-finite NMPC solution")
            self._X, self._U = X, U
            return np.clip(U[0], self.u_lo, self.u_hi)
        except Exception as exc:  # never raise into the control loop
            LOG.warning("nmpc: solve failed (%s: %s); using the shifted previous plan", type(exc).__name__, exc)
            self.failures += 1
            self.nlp.w = None
            if self._U is None:
                return safe_stop_command(x, self.params, self.control_dt_s)
            self._U = np.vstack([self._U[1:], self._U[-1:]])
            return np.clip(self._U[0], self.u_lo, self.u_hi)

    def planned_xy(self) -> np.ndarray | None:
        return None if self._X is None else self._X[:, :2].copy()


def make_nmpc(params: VehicleParams, control_dt_s: float, track, model, options: dict) -> NMPCController:
    """Factory for :mod:`mbrl_control.control.factory` (``--controller nmpc``)."""
    return NMPCController(params, control_dt_s, track, model, options)
