"""Receding-horizon iLQR / DDP controller for the car on a race track, and MPPI + iLQR polishing.

Every control period (or every ``replan_every`` periods) the compiled solve of
:mod:`mbrl_control.kernels.ilqr` optimises ``horizon`` steps of the prediction model (the
controller's torch model, mirrored exactly by :mod:`mbrl_control.kernels.ilqr_vehicle`) under
the smooth racing cost (:class:`RacingCostConfig`), warm-started from the previous plan shifted
by the elapsed steps. Between replans the time-varying feedback ``u = u_t + K_t (x - x_t)`` is
applied. A failed solve (non-finite cost, regularisation blow-up, an exception) never reaches
the control loop: the shifted previous plan is used instead and a warning is logged on
``mbrl_control.control.ilqr``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams, dataclass_from_dict
from mbrl_control.control.base import Controller, safe_stop_command
from mbrl_control.problem.costs.racing import RacingCostConfig
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S
from mbrl_control.track import Track

LOG = logging.getLogger("mbrl_control.control.ilqr")


@dataclass(frozen=True)
class ILQRConfig:
    """Options of the ``ilqr`` controller (the ``ilqr`` section of a controller YAML).

    ``cost`` holds fields of the racing cost shared with MPPI (:class:`costs.RacingCostConfig`):
    progress, soft bound, speed, reverse, lateral-acceleration, slip and centerline-offset terms
    carry over as they are; the non-smooth ones are replaced by smooth equivalents: the crash
    indicator by the soft bound alone, the commanded steering rate by the servo rate
    ``(steer_cmd - steer) / tau``, the wrapped nearest-segment progress by the progress rate along
    a spline of the centerline, every ``max(r, 0)^2`` by a smooth hinge squared. The fields below ``cost`` exist only in the smooth cost.
    """

    horizon: int = 100  # prediction steps (of the model's dt_s)
    ddp: bool = False  # add the second-order dynamics terms (full DDP)
    max_iter: int = 3  # per control period (the warm start carries the optimisation on)
    tol_cost: float = 1e-6  # relative cost decrease that counts as converged
    tol_grad: float = 1e-4  # normalised step size that counts as converged
    mu_init: float = 1e-3  # Levenberg-Marquardt regularisation at the first solve
    mu_max: float = 1e8  # beyond it: divergence, fall back to the shifted plan
    alpha_keep_mu: float = 0.25  # a step accepted shorter than this raises mu (trust-region-like)
    replan_every: int = 1  # control periods per solve; feedback gains in between
    cost: dict = field(default_factory=dict)  # costs.RacingCostConfig fields
    lag_weight: float = 0.0  # (lag error of the frozen reference)^2; it is re-projected every iteration
    steer_weight: float = 0.2  # steer_cmd^2
    accel_weight: float = 0.05  # accel^2; also keeps the quadratic model honest where the power limit flattens accel
    centerline_smoothing_points: int = 5  # moving-average window of the centerline used as the reference
    smooth_bound_m: float = 0.05  # smoothing width of the soft-bound hinge
    smooth_speed_mps: float = 0.3  # ... of the speed cap / reverse hinges
    smooth_lat_accel_mps2: float = 0.5  # ... of the lateral-acceleration hinge
    hard_bound_weight: float = 1e4  # per m^2 beyond the hard limits (cost.hard_margin_m from the edges): bounds as constraints

    def validate(self) -> None:
        if self.horizon < 2:
            raise MbrlError("ilqr: 'horizon' must be at least 2")
        if self.max_iter < 1:
            raise MbrlError("ilqr: 'max_iter' must be at least 1")
        if self.replan_every < 1 or self.replan_every >= self.horizon:
            raise MbrlError("ilqr: 'replan_every' must be in [1, horizon)")
        if not (self.tol_cost >= 0 and self.tol_grad >= 0 and 0 <= self.mu_init < self.mu_max):
            raise MbrlError("ilqr: tolerances must be >= 0 and 0 <= mu_init < mu_max")
        for name in ("lag_weight", "steer_weight", "accel_weight", "hard_bound_weight"):
            if getattr(self, name) < 0:
                raise MbrlError(f"ilqr: '{name}' must be non-negative")
        for name in ("smooth_bound_m", "smooth_speed_mps", "smooth_lat_accel_mps2"):
            if not getattr(self, name) > 0:
                raise MbrlError(f"ilqr: '{name}' must be positive")
        if self.centerline_smoothing_points < 1:
            raise MbrlError("ilqr: 'centerline_smoothing_points' must be at least 1")
        self.cost_config()

    def cost_config(self) -> RacingCostConfig:
        return dataclass_from_dict(RacingCostConfig, self.cost, "ilqr.cost")

    def weight_vector(self, params: VehicleParams, dt_s: float) -> np.ndarray:
        """The smooth cost's weights (order of ``contouring.WEIGHT_FIELDS``)."""
        from mbrl_control.problem.costs.contouring import WEIGHT_FIELDS

        c = self.cost_config()
        servo = c.steer_rate_weight / params.steer_time_constant_s ** 2
        values = {"progress": c.progress_weight, "lateral": c.lateral_weight, "lag": self.lag_weight,
                  "bound": c.soft_bound_weight, "lat_accel": c.lateral_accel_weight,
                  "lat_accel_max": c.lateral_accel_max_mps2, "speed_cap": c.speed_weight, "steer": self.steer_weight,
                  "accel": self.accel_weight, "servo": servo, "dt": dt_s, "slip": c.slip_weight,
                  "reverse": c.reverse_weight, "eps_bound": self.smooth_bound_m, "eps_speed": self.smooth_speed_mps,
                  "eps_lat_accel": self.smooth_lat_accel_mps2, "bound_hard": self.hard_bound_weight,
                  "hard_gap": c.soft_margin_m - c.hard_margin_m}
        return np.array([values[k] for k in WEIGHT_FIELDS], dtype=np.float64)


# --------------------------------------------------------------------------- model and track for the kernels
def model_description(model) -> tuple[str, np.ndarray, float, int, bool, dict | None]:
    """(kind, parameter vector, dt_s, substeps, rk4, residual arrays) of a torch prediction model."""
    from mbrl_control.models.bicycle import split_physics
    from mbrl_control.models.derivatives import param_vector_of_model

    physics, res, kind = split_physics(model)
    residual = None
    if res is not None:  # read at the module's own precision (export() would round to float32)
        as_np = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
        residual = {"weights": [as_np(w) for w in res.weights], "biases": [as_np(b) for b in res.biases],
                    "in_mean": as_np(res.in_mean), "in_std": as_np(res.in_std),
                    "out_mean": as_np(res.out_mean), "out_std": as_np(res.out_std)}
    if kind is None:
        raise MbrlError(f"ilqr: no derivatives for a {type(model).__name__} model (dynamic, kinematic or semiparametric)")
    if model.integrator not in ("rk4", "euler"):
        raise MbrlError(f"ilqr: unsupported integrator '{model.integrator}'")
    return kind, param_vector_of_model(physics), float(model.dt_s), int(model.substeps), model.integrator == "rk4", residual


def track_spline(track: Track, cost: RacingCostConfig, smoothing_points: int = 5) -> dict:
    """Periodic cubic spline of the (lightly smoothed) centerline with per-knot usable half widths.

    Widths are corrected by the signed offset between the raw and the smoothed centerline, so the
    bounds stay where the track's are.
    """
    from scipy.interpolate import CubicSpline

    raw = track.centerline.xy_m
    n = len(raw)
    k = int(smoothing_points)
    if k > 1:
        idx = (np.arange(n)[:, None] + np.arange(k)[None, :] - k // 2) % n
        pts = raw[idx].mean(axis=1)
    else:
        pts = raw.copy()
    closed = np.vstack([pts, pts[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    knots = np.concatenate([[0.0], np.cumsum(seg)])
    spline = CubicSpline(knots, closed, bc_type="periodic")
    d1 = spline(knots[:-1], 1)
    tangent = d1 / np.linalg.norm(d1, axis=1, keepdims=True)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    dev = np.einsum("ij,ij->i", raw - pts, normal)  # raw centerline left of the smoothed one
    left = track.width_left_m + dev
    right = track.width_right_m - dev
    close = lambda a: np.append(a, a[0])  # noqa: E731
    coef = np.ascontiguousarray(np.transpose(spline.c, (1, 0, 2)))  # (N, 4, 2), highest power first
    return {"knots": knots, "coef": coef, "bound_left": close(left), "bound_right": close(right),
            "v_max": np.full(n + 1, cost.speed_max_mps), "length": float(knots[-1]), "margin": cost.soft_margin_m,
            "spline": spline}


def control_box(params: VehicleParams) -> tuple[np.ndarray, np.ndarray]:
    """The control limits the plan keeps to, a hair (1e-6 relative) inside the actuator limits.

    At exactly a limit the model's clamps (``min(accel_cmd, a_max v_switch / max(v, v_switch))``,
    the steering clamp) are at a tie, where the derivative is the average of both sides (0.5,
    as torch's); just inside, it is the one-sided derivative that the optimiser needs.
    """
    shrink = 1.0 - 1e-6
    lo = np.array([params.steer_min_rad, -params.accel_max_mps2]) * shrink
    hi = np.array([params.steer_max_rad, params.accel_max_mps2]) * shrink
    return lo, hi


# --------------------------------------------------------------------------- the controller
class ILQRController(Controller):
    """Receding-horizon iLQR (or DDP) on the track with the smooth racing cost."""

    name = "ilqr"

    def __init__(self, params: VehicleParams, control_dt_s: float, track: Track, model, config: ILQRConfig | None = None) -> None:
        super().__init__(params, control_dt_s)
        from mbrl_control.kernels import ilqr as kern

        self.kern = kern
        self.config = config or ILQRConfig()
        self.config.validate()
        self.cost = self.config.cost_config()
        self.track = track
        self.spline = track_spline(track, self.cost, self.config.centerline_smoothing_points)
        self.u_lo, self.u_hi = control_box(params)
        T = self.config.horizon
        self.ws = kern.make_workspace(STATE_DIM, CONTROL_DIM, T, self.u_lo, self.u_hi, max_iter=self.config.max_iter)
        self.opts = kern.solver_options(max_iter=self.config.max_iter, tol_cost=self.config.tol_cost,
                                        tol_grad=self.config.tol_grad, mu_init=self.config.mu_init,
                                        mu_max=self.config.mu_max, ddp=self.config.ddp,
                                        alpha_keep_mu=self.config.alpha_keep_mu)
        self._gauss_newton_opts = self.opts._replace(ddp=False)
        self.ddp_retries = 0  # DDP solves that diverged and were solved again without the second-order terms
        self._backup_U = np.zeros((T, CONTROL_DIM))
        self._model = None
        self.prob = None
        self.set_model(model)
        self.last_iterations = 0
        self.last_status = kern.CONVERGED
        self.failures = 0
        self._since_solve = 0
        self._have_plan = False
        self._backup_ready = False
        self._candidates: list[np.ndarray] = []
        self.last_warm_start = "shifted"

    # -- model hot swap
    @property
    def model(self):
        return self._model

    def set_model(self, model) -> None:
        """Swap the prediction model: new parameters / residual weights for the kernels (no recompilation
        when the model kind stays the same). During a run a model that cannot be used is rejected
        with a warning (the control loop calls this), at construction it is an error."""
        from mbrl_control.kernels.ilqr_vehicle import PROBLEM_CLASSES, make_vehicle_problem

        try:
            if model is None:
                raise MbrlError("ilqr needs a prediction model (--model dynamic|kinematic|semiparametric|FILE)")
            kind, pvec, dt_s, substeps, rk4, residual = model_description(model)
            if abs(dt_s - self.control_dt_s) > 1e-9:
                raise MbrlError(f"ilqr: the model steps {dt_s} s but the control period is {self.control_dt_s} s")
            if not (np.all(np.isfinite(pvec)) and all(np.all(np.isfinite(a)) for a in (residual or {}).get("weights", []))):
                raise MbrlError("ilqr: the model has non-finite parameters")
            weights = self.config.weight_vector(self.params, dt_s)
            prob = make_vehicle_problem(kind, pvec, dt_s, substeps, rk4, self.config.horizon, weights, self.spline,
                                        residual)
        except Exception as exc:
            if self.prob is None:  # at construction: a configuration error
                raise
            LOG.warning("ilqr: rejected the new model (%s); keeping the current one", exc)
            return
        if self.prob is not None and type(self.prob) is type(prob):
            prob = prob._replace(ref=self.prob.ref, ref_s=self.prob.ref_s)
        self.prob = prob
        self._model = model
        assert type(prob) in PROBLEM_CLASSES.values()

    # -- control
    def reset(self, state: np.ndarray) -> None:
        self.ws.U[:] = 0.0
        self.ws.K[:] = 0.0
        self._have_plan = False
        self._backup_ready = False
        self._candidates.clear()
        self._since_solve = 0
        self.failures = 0
        self.prob.ref_s[:] = float(self.track.project(np.asarray(state)[[S.X, S.Y]]).progress_m)

    def step(self, state: np.ndarray) -> np.ndarray:
        try:
            return self._step(np.asarray(state, dtype=np.float64))
        except Exception as exc:  # never raise into the control loop
            LOG.warning("ilqr: solve raised %s: %s; using the shifted previous plan", type(exc).__name__, exc)
            self.failures += 1
            return self._fallback(state)

    def _step(self, x: np.ndarray) -> np.ndarray:
        ws = self.ws
        if not np.all(np.isfinite(x)):
            LOG.warning("ilqr: non-finite state; using the shifted previous plan")
            return self._fallback(x)
        if self._have_plan and self._since_solve + 1 < self.config.replan_every:
            self._since_solve += 1
            return self._feedback(x, self._since_solve)
        elapsed = self._since_solve + 1
        self._shift_plan()
        np.copyto(self._backup_U, ws.U)
        self._backup_ready = True
        if self._have_plan:  # the plan's projection one period on: the kernel's Newton projection refines it
            self.prob.ref_s[0] = self.prob.ref_s[min(elapsed, self.config.horizon)]
        else:  # global nearest-segment search
            self.prob.ref_s[0] = float(self.track.project(x[[S.X, S.Y]]).progress_m)
        self._pick_warm_start(x)
        cost, iters, status = self.kern.solve(self.prob, x, ws, self.opts)
        if self._have_plan and not self._reference_ok(x):  # the local projection lost the car: search globally
            np.copyto(ws.U, self._backup_U)
            self.prob.ref_s[0] = float(self.track.project(x[[S.X, S.Y]]).progress_m)
            cost, iters, status = self.kern.solve(self.prob, x, ws, self.opts)
        if status == self.kern.DIVERGED and self.config.ddp:
            # the second-order dynamics terms (costate-weighted) can make Quu indefinite beyond any
            # regularisation when a warm start runs deep into the steep bound term; Gauss-Newton cannot
            np.copyto(ws.U, self._backup_U)
            self.ddp_retries += 1
            cost, iters, status = self.kern.solve(self.prob, x, ws, self._gauss_newton_opts)
        self.last_iterations, self.last_status = int(iters), int(status)
        if status in (self.kern.DIVERGED, self.kern.BAD_START) or not np.all(np.isfinite(ws.U)):
            LOG.warning("ilqr: solve %s (cost %s, mu %.3g); using the shifted previous plan",
                        self.kern.STATUS_NAMES.get(int(status), status), cost, ws.info[3])
            self.failures += 1
            return self._fallback(x)
        self._backup_ready = False
        self._have_plan = True
        return np.clip(ws.U[0], self.u_lo, self.u_hi)

    def _reference_ok(self, x: np.ndarray) -> bool:
        """The solve's projection of the current position is a foot point (no lag) near the track."""
        r = self.prob.ref[0]
        dx, dy = x[S.X] - r[0], x[S.Y] - r[1]
        lag, lateral = r[2] * dx + r[3] * dy, -r[3] * dx + r[2] * dy
        return abs(lag) < 0.05 and abs(lateral) < 2.0 * (r[5] + r[6] + 2.0 * self.cost.soft_margin_m)

    def offer_warm_start(self, U: np.ndarray) -> None:
        """A candidate control sequence (T, 2) for the next solve, aligned with its state (e.g. MPPI's)."""
        self._candidates.append(np.asarray(U, dtype=np.float64))

    def _pick_warm_start(self, x: np.ndarray) -> None:
        """Start from the offered sequence that beats the shifted plan under the smooth cost, if any."""
        from mbrl_control.kernels.ilqr_vehicle import update_reference

        self.last_warm_start = "shifted"
        if not self._candidates:
            return
        ws, kern = self.ws, self.kern
        best = kern.rollout(self.prob, x, ws.U, ws.X) if self._have_plan else np.inf
        if np.isfinite(best):
            update_reference(self.prob, ws.X)
            best = kern.trajectory_cost(self.prob, ws.X, ws.U)
        for U in self._candidates:
            if U.shape != ws.U.shape or not np.all(np.isfinite(U)):
                continue
            cand = np.clip(U, self.u_lo, self.u_hi)
            if np.isfinite(kern.rollout(self.prob, x, cand, ws.Xn)):
                update_reference(self.prob, ws.Xn)
                J = kern.trajectory_cost(self.prob, ws.Xn, cand)
                if J < best:
                    best = J
                    ws.U[:] = cand
                    ws.K[:] = 0.0
                    self.last_warm_start = "offered"
        self._candidates.clear()

    def _shift_plan(self) -> None:
        """Warm start: the plan moved on by the periods elapsed since it was made."""
        if self._have_plan:
            for _ in range(self._since_solve + 1):
                self.kern.shift_plan(self.ws.U, self.ws.K, True)
        self._since_solve = 0

    def _feedback(self, x: np.ndarray, t: int) -> np.ndarray:
        """Between replans: the plan's control at t plus the time-varying feedback on the state error."""
        ws = self.ws
        dx = x - ws.X[t]
        u = ws.U[t] + ws.K[t] @ dx
        if not np.all(np.isfinite(u)):
            u = ws.U[t]
        return np.clip(u, self.u_lo, self.u_hi)

    def _fallback(self, state) -> np.ndarray:
        """The shifted previous plan's first control (a safe stop when there is none); it stays the warm start."""
        ws = self.ws
        if not self._backup_ready:  # failed before the shift: shift now
            self._shift_plan()
            np.copyto(self._backup_U, ws.U)
        self._backup_ready = False
        np.copyto(ws.U, self._backup_U)
        ws.K[:] = 0.0
        self._since_solve = 0
        u = ws.U[0]
        if not self._have_plan or not np.all(np.isfinite(u)):
            ws.U[:] = 0.0
            return safe_stop_command(np.asarray(state, dtype=np.float64) if state is not None else None,
                                     self.params, self.control_dt_s)
        return np.clip(u, self.u_lo, self.u_hi)

    def planned_xy(self) -> np.ndarray | None:
        return self.ws.X[:, [S.X, S.Y]].copy() if self._have_plan else None

    def plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X (T+1, 7), U (T, 2), K (T, 2, 7)) of the current plan."""
        return self.ws.X.copy(), self.ws.U.copy(), self.ws.K.copy()


def make_ilqr(params: VehicleParams, control_dt_s: float, track: Track, model, options: dict) -> ILQRController:
    """Factory for :mod:`mbrl_control.control.factory` (``--controller ilqr``)."""
    return ILQRController(params, control_dt_s, track, model, dataclass_from_dict(ILQRConfig, options, "ilqr"))


# --------------------------------------------------------------------------- MPPI finds the basin, iLQR polishes
class MPPIILQRController(Controller):
    """Each period: one MPPI step explores (sampling escapes poor local minima), its nominal
    sequence is offered to iLQR as a warm start next to iLQR's own shifted plan (the cheaper under
    the smooth cost wins), iLQR polishes it to a local optimum with feedback gains, and the polished
    plan becomes MPPI's nominal sequence for the next period."""

    name = "mppi_ilqr"

    def __init__(self, params: VehicleParams, control_dt_s: float, track: Track, model,
                 ilqr_config: ILQRConfig, mppi_options: dict) -> None:
        super().__init__(params, control_dt_s)
        from mbrl_control.control.mppi import MPPIConfig, MPPIController

        self.ilqr = ILQRController(params, control_dt_s, track, model, ilqr_config)
        mppi_options = {"horizon": ilqr_config.horizon, "cost": ilqr_config.cost, **mppi_options}
        mppi_config = dataclass_from_dict(MPPIConfig, mppi_options, "mppi_ilqr.mppi")
        if mppi_config.horizon != ilqr_config.horizon:
            raise MbrlError("mppi_ilqr: the MPPI and iLQR horizons must be equal")
        self.mppi = MPPIController(params, control_dt_s, track, model, mppi_config)
        self.mppi_wins = 0

    @property
    def model(self):
        return self.ilqr.model

    def set_model(self, model) -> None:
        self.ilqr.set_model(model)
        self.mppi.set_model(model)

    def reset(self, state: np.ndarray) -> None:
        self.ilqr.reset(state)
        self.mppi.reset(state)
        self.mppi_wins = 0

    def step(self, state: np.ndarray) -> np.ndarray:
        try:
            self.mppi.step(state)
            plan = getattr(self.mppi, "_plan", None)
            if plan is not None:
                self.ilqr.offer_warm_start(plan[1])
        except Exception as exc:  # MPPI is only a source of warm starts: iLQR carries on alone
            LOG.warning("mppi_ilqr: MPPI step raised %s: %s; iLQR alone this period", type(exc).__name__, exc)
        u = self.ilqr.step(state)
        if self.ilqr.last_warm_start == "offered":
            self.mppi_wins += 1
        if self.ilqr._have_plan and np.all(np.isfinite(self.ilqr.ws.U)):
            U = self.ilqr.ws.U
            self.mppi.U[:-1] = U[1:]
            self.mppi.U[-1] = U[-1]
            self.mppi.u_prev[:] = u
        return u

    def planned_xy(self) -> np.ndarray | None:
        return self.ilqr.planned_xy()


def make_mppi_ilqr(params: VehicleParams, control_dt_s: float, track: Track, model, options: dict) -> MPPIILQRController:
    """Factory for ``--controller mppi_ilqr``: options ``{"ilqr": {...}, "mppi": {...}}`` (cost shared from ilqr)."""
    options = dict(options or {})
    unknown = sorted(set(options) - {"ilqr", "mppi"})
    if unknown:
        raise MbrlError(f"mppi_ilqr: unknown parameter '{unknown[0]}' (known: ilqr, mppi)")
    ilqr_config = dataclass_from_dict(ILQRConfig, options.get("ilqr", {}), "mppi_ilqr.ilqr")
    return MPPIILQRController(params, control_dt_s, track, model, ilqr_config, dict(options.get("mppi", {})))
