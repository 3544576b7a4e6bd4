"""Identify a real car's physics and actuator parameters by multi-step prediction error.

The recording (:class:`mbrl_control.bag.csv_telemetry.Telemetry`) is cut into open-loop windows
(``horizon_s`` long, a start every ``stride_s`` at driving speed, as the metric does); each window
is predicted from its measured start state with the recorded commands (and the commands before
it, through the steering dead time) by :func:`mbrl_control.models.predictor.rollout`, and the
position, yaw and velocity errors every ``sample_s`` along the window are the residuals of a
bounded trust-region least-squares fit (``scipy.optimize.least_squares``) of the identified
parameters of :mod:`mbrl_control.models.commanded_single_track`, with a prior around the vehicle
YAML's initial values (``PRIOR_STD``, weighed against the data) so that what the data cannot see
stays put. The Jacobian is taken
by forward differences evaluated as one batched rollout of every perturbed parameter set. The
fit is deterministic: a seed only picks the windows when there are more than ``max_windows``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.models.commanded_single_track import IDENTIFIED_PARAMS
from mbrl_control.models.predictor import CommandedCarPredictor, rollout

log = logging.getLogger("mbrl_control.sysid")

BOUNDS = {
    "steer_gain_left_rad": (0.05, 0.8), "steer_gain_right_rad": (0.05, 0.8), "steer_offset_rad": (-0.15, 0.15),
    "steer_time_constant_s": (0.02, 0.5), "steer_dead_time_s": (-0.2, 0.25), "throttle_time_constant_s": (0.01, 0.5),
    "throttle_dead_zone": (0.0, 0.4), "motor_force_n": (1.0, 200.0), "motor_speed_coeff_nspm": (0.0, 100.0),
    "rolling_resistance_n": (0.0, 5.0), "drag_coeff_nspm": (0.0, 10.0), "tyre_peak_front_n": (0.5, 40.0),
    "tyre_peak_rear_n": (0.5, 40.0), "tyre_stiffness_front": (0.3, 40.0), "tyre_stiffness_rear": (0.3, 40.0),
    "tyre_shape": (0.5, 2.0), "steer_friction_n": (0.0, 50.0),
}
"""Physical bounds of the identified parameters."""


PRIOR_STD = {
    "steer_gain_left_rad": (0.15, "log"), "steer_gain_right_rad": (0.15, "log"), "steer_offset_rad": (0.02, "lin"),
    "steer_time_constant_s": (0.3, "log"), "steer_dead_time_s": (0.05, "lin"), "throttle_time_constant_s": (0.3, "log"),
    "throttle_dead_zone": (0.03, "lin"), "motor_force_n": (0.5, "log"), "motor_speed_coeff_nspm": (5.0, "lin"),
    "rolling_resistance_n": (1.0, "lin"), "drag_coeff_nspm": (0.5, "lin"), "tyre_peak_front_n": (0.3, "log"),
    "tyre_peak_rear_n": (0.3, "log"), "tyre_stiffness_front": (0.5, "log"), "tyre_stiffness_rear": (0.5, "log"),
    "tyre_shape": (0.2, "lin"), "steer_friction_n": (3.0, "lin"),
}
"""Prior standard deviation of each identified parameter around the vehicle YAML's value, and whether
it is relative (``log``: 0.3 is about +-30 %) or absolute (``lin``, in the parameter's unit). Set
from physics, before any score: steering gains +-15 % (the map's shape differs from DART's), trim
about 1 deg, dead time half the 10 Hz command period, the motor's force +-50 % (a guess from the
kit's motor), tyre peaks +-30 % (friction 0.6-1.1), the rest a plausible range."""


@dataclass(frozen=True)
class RealFitConfig:
    horizon_s: float = 1.0          # open-loop length of a fitting window
    stride_s: float = 0.2           # a window starts every this many seconds
    sample_s: float = 0.1           # errors compared every this many seconds along a window
    max_windows: int = 200          # more windows than this: a seeded random subset
    max_iterations: int = 40        # trust-region evaluations per pass (at most)
    prior: str = "physics"          # "physics": PRIOR_STD, weighed by the data (empirical Bayes); "uniform": prior_weight
    prior_weight: float = 0.02      # "uniform" only: pull towards the initial values, per unit of each bound range
    weak_information: float = 1.0   # "physics": directions the data informs less than this (prior = 1) stay at the prior
    weights: tuple[float, ...] = (1.0, 1.0, 0.3, 0.3, 0.3, 0.1)  # x, y [m], yaw [rad], vx, vy [m/s], w [rad/s]
    seed: int = 0

    def __post_init__(self):
        if self.prior not in PRIORS:
            raise MbrlError(f"real fit: prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")
        if not (self.weak_information >= 0.0 and self.prior_weight >= 0.0):
            raise MbrlError("real fit: weak_information and prior_weight must be >= 0")


PRIORS = ("physics", "uniform")


@dataclass
class RealFitResult:
    predictor: CommandedCarPredictor
    initial_cost: float
    final_cost: float
    windows: int
    iterations: int
    fit_s: float
    held_at_prior: int = 0          # parameter directions the data could not inform, kept at the prior


@dataclass
class WindowBatch:
    """Open-loop windows of one or more recordings (same ``dt``): start states (N, 6), commands
    (N, H, m), the commands before each start (N, H, m), and the measured states (N, S, 6) at the
    window steps ``cols`` (S,) where errors are compared."""

    s0: np.ndarray
    u: np.ndarray
    past: np.ndarray
    meas: np.ndarray
    cols: np.ndarray
    dt: float

    def __len__(self) -> int:
        return len(self.s0)

    def take(self, idx: np.ndarray) -> "WindowBatch":
        return WindowBatch(self.s0[idx], self.u[idx], self.past[idx], self.meas[idx], self.cols, self.dt)


def as_telemetry_list(tel) -> list:
    """One telemetry or several, as a list (all with the same sample time)."""
    tels = list(tel) if isinstance(tel, (list, tuple)) else [tel]
    if not tels:
        raise MbrlError("no recording to fit")
    if any(abs(t.dt - tels[0].dt) > 1e-9 for t in tels):
        raise MbrlError("the recordings have different sample times: " + ", ".join(f"{t.name} {t.dt:g} s" for t in tels))
    return tels


def window_batch(tels, horizon_s: float, stride_s: float, sample_s: float, past_s: float | None = None) -> WindowBatch:
    """Every ``horizon_s`` window starting each ``stride_s`` at driving speed, of each recording, with
    the commands of the ``past_s`` before each start (default ``horizon_s``, as metric.py gives them)."""
    tels = as_telemetry_list(tels)
    dt = tels[0].dt
    H = int(round(horizon_s / dt))
    P = H if past_s is None else max(1, int(round(past_s / dt)))
    every = max(1, int(round(sample_s / dt)))
    cols = np.arange(every - 1, H, every)
    parts = []
    for tel in tels:
        starts, _ = tel.windows(horizon_s, stride_s)
        steps = starts[:, None] + np.arange(H)[None, :]
        parts.append((tel.state[starts], tel.cmd[steps], tel.past_commands(starts, P), tel.state[steps[:, cols]]))
    return WindowBatch(*(np.concatenate([q[i] for q in parts]) for i in range(4)), cols, dt)


class _PriorSpace:
    """The fitted coordinates: ``x = log p`` for relative priors, ``p`` otherwise, and the prior's
    standard deviation ``sx`` in them (``uniform``: the bound range, as a linear coordinate)."""

    def __init__(self, initial: dict, config: RealFitConfig):
        names = IDENTIFIED_PARAMS
        lo, hi = (np.array([BOUNDS[n][i] for n in names]) for i in (0, 1))
        if config.prior == "uniform":
            self.log, self.sx = np.zeros(len(names), bool), hi - lo
        else:
            self.log = np.array([PRIOR_STD[n][1] == "log" for n in names])
            self.sx = np.array([PRIOR_STD[n][0] for n in names])
        self.x0 = self.to_x(np.clip(np.array([initial[n] for n in names], dtype=np.float64), lo, hi))
        self.lo, self.hi = self.to_x(lo), self.to_x(hi)

    def to_x(self, p: np.ndarray) -> np.ndarray:
        return np.where(self.log, np.log(np.maximum(p, 1e-12)), p)

    def to_p(self, x: np.ndarray) -> np.ndarray:
        return np.where(self.log, np.exp(x), x)


class _Problem:
    """Weighted multi-step prediction residuals of a window batch and the prior's, for least squares."""

    def __init__(self, batch: WindowBatch, initial: dict, space: _PriorSpace, config: RealFitConfig):
        self.batch, self.space = batch, space
        self.w = np.asarray(config.weights, dtype=np.float64)
        self.fixed = {k: v for k, v in initial.items() if k not in IDENTIFIED_PARAMS}
        self.idx_dead = IDENTIFIED_PARAMS.index("steer_dead_time_s")
        self.scale = 1.0 / np.sqrt(len(batch) * len(batch.cols))
        self.prior_weight = config.prior_weight     # multiplies sum(((x - x0) / sx)^2)
        self.held = np.zeros((len(IDENTIFIED_PARAMS), 0))   # directions (prior-std units) held at the prior

    def params_of(self, X: np.ndarray) -> SimpleNamespace:   # X (K, P) -> attributes of shape (K, 1)
        P = self.space.to_p(X)
        ns = SimpleNamespace(**self.fixed)
        for i, n in enumerate(IDENTIFIED_PARAMS):
            setattr(ns, n, P[:, i:i + 1])
        ns.steer_dead_time_s = float(P[0, self.idx_dead])  # the dead time shifts commands: one value per rollout
        return ns

    def data_residuals(self, X: np.ndarray) -> np.ndarray:      # (K, N S 6)
        b = self.batch
        err = rollout(self.params_of(X), b.s0, b.u, b.past, b.dt)[:, :, b.cols] - b.meas[None]
        err[..., 2] = np.angle(np.exp(1j * err[..., 2]))
        return (err * self.w).reshape(len(X), -1) * self.scale

    def residuals(self, X: np.ndarray) -> np.ndarray:
        prior = np.sqrt(self.prior_weight) * (X - self.space.x0) / self.space.sx
        out = np.concatenate([self.data_residuals(X), prior, 100.0 * prior @ self.held], axis=1)
        return np.where(np.isfinite(out), out, 1e3)

    def jacobian(self, x: np.ndarray, residuals, step: np.ndarray) -> np.ndarray:
        """Forward differences as batched rollouts; the dead-time step (a different command shift) alone."""
        X = np.repeat(x[None], len(x) + 1, axis=0)
        steps = np.where(x + step <= self.space.hi, step, -step)
        X[1:] += np.diag(steps)
        others = [0] + [i + 1 for i in range(len(x)) if i != self.idx_dead]
        R_others = residuals(X[others])
        R = np.empty((len(x) + 1, R_others.shape[1]))
        R[others] = R_others
        R[self.idx_dead + 1] = residuals(X[self.idx_dead + 1:self.idx_dead + 2])[0]
        return ((R[1:] - R[0]) / steps[:, None]).T

    def weakly_informed(self, x: np.ndarray, below: float) -> np.ndarray:
        """Directions (in prior-std units) whose data information, relative to the prior's 1, is below ``below``."""
        J = self.jacobian(x, self.data_residuals, 1e-4 * self.space.sx) * self.space.sx[None]
        info, vectors = np.linalg.eigh(J.T @ J / self.prior_weight)
        return vectors[:, info < below]


def _least_squares(problem: _Problem, x: np.ndarray, config: RealFitConfig, counter: dict, progress: bool):
    from scipy.optimize import least_squares

    step = 1e-4 * (problem.space.hi - problem.space.lo) if config.prior == "uniform" else np.full(len(x), 1e-4)

    def fun(z):
        r = problem.residuals(z[None])[0]
        counter["it"] += 1
        if progress:
            log.info("fit: evaluation %d, cost %.5f", counter["it"], 0.5 * float(r @ r))
        return r

    return least_squares(fun, x, jac=lambda z: problem.jacobian(z, problem.residuals, step),
                         bounds=(problem.space.lo, problem.space.hi), method="trf", max_nfev=config.max_iterations,
                         x_scale="jac", xtol=1e-8, ftol=1e-8)


def fit_commanded_car(tel, initial: dict, config: RealFitConfig = RealFitConfig(), progress: bool = False) -> RealFitResult:
    """Fit the identified parameters of ``initial`` (facts + initial values) on the telemetry ``tel``
    (one recording or a list of them).

    ``prior="physics"`` is a maximum a posteriori fit: the prior ``PRIOR_STD`` around the initial
    values, weighed against the data as a Gaussian likelihood whose noise is the mean squared
    weighted error (first at the initial values, then re-estimated at the first fit: empirical
    Bayes) over the effective number of independent samples, one per second of windows. The
    directions of parameter space the data informs less than the prior are then held at the
    prior, so that a recording that never excites the tyres (a slow lap) or one side of the
    steering leaves them as the vehicle YAML says instead of drifting to whatever fits its noise."""
    tic = time.perf_counter()
    tels = as_telemetry_list(tel)
    name = ", ".join(t.name for t in tels)
    batch = window_batch(tels, config.horizon_s, config.stride_s, config.sample_s)
    if len(batch) < 5:
        raise MbrlError(f"{name}: too little driving to fit ({len(batch)} windows of {config.horizon_s:g} s)")
    effective_samples = len(batch) * config.stride_s / config.horizon_s
    if len(batch) > config.max_windows:
        rng = np.random.default_rng(config.seed)
        batch = batch.take(np.sort(rng.choice(len(batch), config.max_windows, replace=False)))
    space = _PriorSpace(initial, config)
    problem = _Problem(batch, initial, space, config)
    counter = {"it": 0}
    r0 = problem.data_residuals(space.x0[None])[0]
    if config.prior == "physics":
        problem.prior_weight = float(r0 @ r0) / effective_samples
    r_start = problem.residuals(space.x0[None])[0]
    sol = _least_squares(problem, space.x0, config, counter, progress)
    if config.prior == "physics":
        r1 = problem.data_residuals(sol.x[None])[0]
        problem.prior_weight = max(float(r1 @ r1), 1e-12) / effective_samples
        problem.held = problem.weakly_informed(sol.x, config.weak_information)
        sol = _least_squares(problem, sol.x, config, counter, progress)
    params = dict(initial)
    params.update({n: float(v) for n, v in zip(IDENTIFIED_PARAMS, space.to_p(sol.x))})
    pred = CommandedCarPredictor(params)
    check = pred.predict(batch.s0, batch.u, dt=batch.dt, past_commands=batch.past)
    if not np.all(np.isfinite(check)):
        raise MbrlError(f"{name}: the fitted model predicts NaN on its own windows; no model written")
    return RealFitResult(pred, 0.5 * float(r_start @ r_start), float(sol.cost), len(batch), counter["it"],
                         time.perf_counter() - tic, problem.held.shape[1])


REPORT_S = (0.2, 0.5, 1.0)
STATE_ERRORS = ("pos", "yaw", "vx", "vy", "w")


def prediction_errors(tel, predict, horizon_s: float = 1.0, report_s=REPORT_S) -> dict:
    """Per-window open-loop errors of a metric.py-contract predictor on telemetry ``tel``: dict
    horizon -> (N, 5) [position m, yaw rad (wrapped), vx, vy, w] (the windows of ``tel.windows``)."""
    starts, H = tel.windows(horizon_s)
    if len(starts) == 0:
        return {h: np.zeros((0, 5)) for h in report_s}
    steps = starts[:, None] + np.arange(H)[None, :]
    pred = np.asarray(predict(tel.state[starts], tel.cmd[steps], dt=tel.dt,
                              past_commands=tel.past_commands(starts, H)), dtype=np.float64)
    if pred.shape != (len(starts), H, 6):
        raise MbrlError(f"predictor returned shape {pred.shape}, expected {(len(starts), H, 6)}")
    out = {}
    for h in report_s:
        j = int(round(h / tel.dt))
        meas, p = tel.state[starts + j], pred[:, j - 1]
        out[h] = np.stack([np.hypot(p[:, 0] - meas[:, 0], p[:, 1] - meas[:, 1]),
                           np.angle(np.exp(1j * (p[:, 2] - meas[:, 2]))),
                           p[:, 3] - meas[:, 3], p[:, 4] - meas[:, 4], p[:, 5] - meas[:, 5]], axis=1)
    return out


def summarise_errors(err: dict) -> dict:
    """RMSE per horizon (metric.py's ``summarise`` layout: ``n_windows``, ``"1s": {"pos": ...}``)."""
    res = {"n_windows": int(next(iter(err.values())).shape[0]) if err else 0}
    for h, e in err.items():
        r = np.sqrt(np.mean(e ** 2, axis=0)) if len(e) else np.full(5, np.nan)
        res[f"{h:g}s"] = {k: float(v) for k, v in zip(STATE_ERRORS, r)}
    return res


def constant_velocity(state0, commands, dt, past_commands=None):
    """Baseline predictor: body velocities and yaw rate held (exact constant-twist motion)."""
    s0 = np.atleast_2d(state0)
    H = np.shape(commands)[-2]
    tau = dt * np.arange(1, H + 1)[None, :]
    x0, y0, psi0, vx, vy, w = (s0[:, i:i + 1] for i in range(6))
    psi = psi0 + w * tau
    small = np.abs(w) < 1e-6
    ws = np.where(small, 1.0, w)
    ix = np.where(small, np.cos(psi0) * tau - np.sin(psi0) * w * tau ** 2 / 2, (np.sin(psi) - np.sin(psi0)) / ws)
    iy = np.where(small, np.sin(psi0) * tau + np.cos(psi0) * w * tau ** 2 / 2, (np.cos(psi0) - np.cos(psi)) / ws)
    b = np.broadcast_to
    out = np.stack([x0 + vx * ix - vy * iy, y0 + vx * iy + vy * ix, psi, b(vx, psi.shape), b(vy, psi.shape),
                    b(w, psi.shape)], axis=-1)
    return out if np.ndim(state0) == 2 else out[0]


constant_velocity.batched = True
