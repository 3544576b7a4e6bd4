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
from dataclasses import asdict, dataclass, field

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams, dataclass_from_dict
from mbrl_control.control.base import Controller, safe_stop_command
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S, U
from mbrl_control.track import Track

LOG = logging.getLogger("mbrl_control.control.ilqr")
GRAVITY_MPS2 = 9.81


@dataclass(frozen=True)
class RacingCostConfig:
    """Weights of the smooth racing cost (per prediction step; see ``derivatives.racing_state_cost``)."""

    progress: float = 1.0  # reward per metre of progress along the centerline
    lateral: float = 0.02  # (offset from the centerline)^2 [1/m^2]
    lag: float = 0.0  # (lag error of the frozen reference)^2; the reference is re-projected every iteration
    bound: float = 500.0  # (distance beyond the usable half width)^2
    lat_accel: float = 0.5  # (|v * yaw_rate| beyond lat_accel_max)^2
    lat_accel_max_mps2: float = 0.0  # 0: friction_coeff * g * lat_accel_fraction
    lat_accel_fraction: float = 0.8
    speed_cap: float = 10.0  # (v beyond v_max)^2
    v_max_mps: float = 12.0
    steer: float = 0.01  # steer_cmd^2
    accel: float = 0.002  # accel^2
    servo: float = 0.5  # (steer_cmd - steer)^2: steering-rate smoothness
    slip: float = 0.0  # slip^2
    margin_m: float = 0.35  # keep the centre of gravity this far inside the bounds
    smoothing_points: int = 5  # moving-average window of the centerline used as the reference path

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if name != "smoothing_points" and value < 0:
                raise MbrlError(f"ilqr.cost: '{name}' must be non-negative, got {value}")
        if self.smoothing_points < 1:
            raise MbrlError("ilqr.cost: 'smoothing_points' must be at least 1")

    def weight_vector(self, params: VehicleParams, dt_s: float) -> np.ndarray:
        from mbrl_control.models.derivatives import WEIGHT_FIELDS

        a_lat = self.lat_accel_max_mps2 or params.friction_coeff * GRAVITY_MPS2 * self.lat_accel_fraction
        values = {"progress": self.progress, "lateral": self.lateral, "lag": self.lag, "bound": self.bound,
                  "lat_accel": self.lat_accel, "lat_accel_max": a_lat, "speed_cap": self.speed_cap,
                  "steer": self.steer, "accel": self.accel, "servo": self.servo, "dt": dt_s, "slip": self.slip}
        return np.array([values[k] for k in WEIGHT_FIELDS], dtype=np.float64)


@dataclass(frozen=True)
class ILQRConfig:
    """Options of the ``ilqr`` controller (the ``ilqr`` section of a controller YAML)."""

    horizon: int = 100  # prediction steps (of the model's dt_s)
    ddp: bool = False  # add the second-order dynamics terms (full DDP)
    max_iter: int = 8  # per control period
    tol_cost: float = 1e-6  # relative cost decrease that counts as converged
    tol_grad: float = 1e-4  # normalised step size that counts as converged
    mu_init: float = 1e-3  # Levenberg-Marquardt regularisation at the first solve
    mu_max: float = 1e8  # beyond it: divergence, fall back to the shifted plan
    replan_every: int = 1  # control periods per solve; feedback gains in between
    cost: dict = field(default_factory=dict)  # RacingCostConfig fields

    def validate(self) -> None:
        if self.horizon < 2:
            raise MbrlError("ilqr: 'horizon' must be at least 2")
        if self.max_iter < 1:
            raise MbrlError("ilqr: 'max_iter' must be at least 1")
        if self.replan_every < 1 or self.replan_every >= self.horizon:
            raise MbrlError("ilqr: 'replan_every' must be in [1, horizon)")
        if not (self.tol_cost >= 0 and self.tol_grad >= 0 and 0 <= self.mu_init < self.mu_max):
            raise MbrlError("ilqr: tolerances must be >= 0 and 0 <= mu_init < mu_max")
        self.cost_config()

    def cost_config(self) -> RacingCostConfig:
        return dataclass_from_dict(RacingCostConfig, self.cost, "ilqr.cost")


# --------------------------------------------------------------------------- model and track for the kernels
def model_description(model) -> tuple[str, np.ndarray, float, int, bool, dict | None]:
    """(kind, parameter vector, dt_s, substeps, rk4, residual arrays) of a torch prediction model."""
    from mbrl_control.models.bicycle import DynamicSingleTrack, KinematicBicycle
    from mbrl_control.models.derivatives import param_vector_of_model

    residual = None
    physics = model
    if hasattr(model, "physics") and hasattr(model, "residual"):
        physics = model.physics
        res = model.residual  # read at the module's own precision (export() would round to float32)
        as_np = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
        residual = {"weights": [as_np(w) for w in res.weights], "biases": [as_np(b) for b in res.biases],
                    "in_mean": as_np(res.in_mean), "in_std": as_np(res.in_std),
                    "out_mean": as_np(res.out_mean), "out_std": as_np(res.out_std)}
    if type(physics) is DynamicSingleTrack:
        kind = "dynamic"
    elif type(physics) is KinematicBicycle:
        kind = "kinematic"
    else:
        raise MbrlError(f"ilqr: no derivatives for a {type(model).__name__} model (dynamic, kinematic or semiparametric)")
    if model.integrator not in ("rk4", "euler"):
        raise MbrlError(f"ilqr: unsupported integrator '{model.integrator}'")
    return kind, param_vector_of_model(physics), float(model.dt_s), int(model.substeps), model.integrator == "rk4", residual


def track_spline(track: Track, cost: RacingCostConfig) -> dict:
    """Periodic cubic spline of the (lightly smoothed) centerline with per-knot usable half widths.

    Widths are corrected by the signed offset between the raw and the smoothed centerline, so the
    bounds stay where the track's are.
    """
    from scipy.interpolate import CubicSpline

    raw = track.centerline.xy_m
    n = len(raw)
    k = int(cost.smoothing_points)
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
            "v_max": np.full(n + 1, cost.v_max_mps), "length": float(knots[-1]), "margin": cost.margin_m,
            "spline": spline}


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
        self.spline = track_spline(track, self.cost)
        self.u_lo = np.array([params.steer_min_rad, -params.accel_max_mps2])
        self.u_hi = np.array([params.steer_max_rad, params.accel_max_mps2])
        T = self.config.horizon
        self.ws = kern.make_workspace(STATE_DIM, CONTROL_DIM, T, self.u_lo, self.u_hi, max_iter=self.config.max_iter)
        self.opts = kern.solver_options(max_iter=self.config.max_iter, tol_cost=self.config.tol_cost,
                                        tol_grad=self.config.tol_grad, mu_init=self.config.mu_init,
                                        mu_max=self.config.mu_max, ddp=self.config.ddp)
        self._backup_U = np.zeros((T, CONTROL_DIM))
        self._backup_X = np.zeros((T + 1, STATE_DIM))
        self._model = None
        self.prob = None
        self.set_model(model)
        self.last_iterations = 0
        self.last_status = kern.CONVERGED
        self.failures = 0
        self._since_solve = 0
        self._have_plan = False

    # -- model hot swap
    @property
    def model(self):
        return self._model

    def set_model(self, model) -> None:
        """Swap the prediction model: new parameters / residual weights for the kernels (no recompilation
        when the model kind and residual shape stay the same)."""
        from mbrl_control.kernels.ilqr_vehicle import PROBLEM_CLASSES, make_vehicle_problem

        if model is None:
            raise MbrlError("ilqr needs a prediction model (--model dynamic|kinematic|semiparametric|FILE)")
        kind, pvec, dt_s, substeps, rk4, residual = model_description(model)
        if abs(dt_s - self.control_dt_s) > 1e-9:
            raise MbrlError(f"ilqr: the model steps {dt_s} s but the control period is {self.control_dt_s} s")
        weights = self.cost.weight_vector(self.params, dt_s)
        prob = make_vehicle_problem(kind, pvec, dt_s, substeps, rk4, self.config.horizon, weights, self.spline, residual)
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
        if self._have_plan:
            for _ in range(self._since_solve + 1):
                self.kern.shift_plan(ws.U, ws.K, True)
        self._since_solve = 0
        np.copyto(self._backup_U, ws.U)
        self.prob.ref_s[0] = float(self.track.project(x[[S.X, S.Y]]).progress_m)
        cost, iters, status = self.kern.solve(self.prob, x, ws, self.opts)
        self.last_iterations, self.last_status = int(iters), int(status)
        if status in (self.kern.DIVERGED, self.kern.BAD_START) or not np.all(np.isfinite(ws.U)):
            LOG.warning("ilqr: solve %s (cost %s, mu %.3g); using the shifted previous plan",
                        self.kern.STATUS_NAMES.get(int(status), status), cost, ws.info[3])
            self.failures += 1
            np.copyto(ws.U, self._backup_U)
            ws.K[:] = 0.0
            return self._fallback(x)
        self._have_plan = True
        return np.clip(ws.U[0], self.u_lo, self.u_hi)

    def _feedback(self, x: np.ndarray, t: int) -> np.ndarray:
        """Between replans: the plan's control at t plus the time-varying feedback on the state error."""
        ws = self.ws
        dx = x - ws.X[t]
        dx[S.YAW] = np.arctan2(np.sin(dx[S.YAW]), np.cos(dx[S.YAW]))
        u = ws.U[t] + ws.K[t] @ dx
        if not np.all(np.isfinite(u)):
            u = ws.U[t]
        return np.clip(u, self.u_lo, self.u_hi)

    def _fallback(self, state) -> np.ndarray:
        """The shifted previous plan's first control (a safe stop when there is none)."""
        u = self._backup_U[min(1, len(self._backup_U) - 1)] if self._have_plan else None
        if u is None or not np.all(np.isfinite(u)):
            return safe_stop_command(np.asarray(state, dtype=np.float64) if state is not None else None,
                                     self.params, self.control_dt_s)
        self.ws.U[:] = np.vstack([self._backup_U[1:], self._backup_U[-1:]])
        self._backup_U[:] = self.ws.U
        return np.clip(u, self.u_lo, self.u_hi)

    def planned_xy(self) -> np.ndarray | None:
        return self.ws.X[:, [S.X, S.Y]].copy() if self._have_plan else None

    def plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X (T+1, 7), U (T, 2), K (T, 2, 7)) of the current plan."""
        return self.ws.X.copy(), self.ws.U.copy(), self.ws.K.copy()


def make_ilqr(params: VehicleParams, control_dt_s: float, track: Track, model, options: dict) -> ILQRController:
    """Factory for :mod:`mbrl_control.control.factory` (``--controller ilqr``)."""
    return ILQRController(params, control_dt_s, track, model, dataclass_from_dict(ILQRConfig, options, "ilqr"))
