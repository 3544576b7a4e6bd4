"""Identify a real car's physics and actuator parameters by multi-step prediction error.

The recording (:class:`mbrl_control.bag.csv_telemetry.Telemetry`) is cut into open-loop windows
(``horizon_s`` long, a start every ``stride_s`` at driving speed, as the metric does); each window
is predicted from its measured start state with the recorded commands (and the commands before
it, through the steering dead time) by :func:`mbrl_control.models.predictor.rollout`, and the
position, yaw and velocity errors every ``sample_s`` along the window are the residuals of a
bounded trust-region least-squares fit (``scipy.optimize.least_squares``) of the identified
parameters of :mod:`mbrl_control.models.commanded_single_track`, with a weak pull towards the
vehicle YAML's initial values so that what the data cannot see stays put. The Jacobian is taken
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


@dataclass(frozen=True)
class RealFitConfig:
    horizon_s: float = 1.0          # open-loop length of a fitting window
    stride_s: float = 0.2           # a window starts every this many seconds
    sample_s: float = 0.1           # errors compared every this many seconds along a window
    max_windows: int = 200          # more windows than this: a seeded random subset
    max_iterations: int = 40        # trust-region evaluations (at most)
    prior_weight: float = 0.02      # pull towards the initial values (per parameter, in units of its bound range)
    weights: tuple[float, ...] = (1.0, 1.0, 0.3, 0.3, 0.3, 0.1)  # x, y [m], yaw [rad], vx, vy [m/s], w [rad/s]
    seed: int = 0


@dataclass
class RealFitResult:
    predictor: CommandedCarPredictor
    initial_cost: float
    final_cost: float
    windows: int
    iterations: int
    fit_s: float


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


def window_batch(tels, horizon_s: float, stride_s: float, sample_s: float) -> WindowBatch:
    """Every ``horizon_s`` window starting each ``stride_s`` at driving speed, of each recording."""
    tels = as_telemetry_list(tels)
    dt = tels[0].dt
    H = int(round(horizon_s / dt))
    every = max(1, int(round(sample_s / dt)))
    cols = np.arange(every - 1, H, every)
    parts = []
    for tel in tels:
        starts, _ = tel.windows(horizon_s, stride_s)
        steps = starts[:, None] + np.arange(H)[None, :]
        parts.append((tel.state[starts], tel.cmd[steps], tel.past_commands(starts, H), tel.state[steps[:, cols]]))
    return WindowBatch(*(np.concatenate([q[i] for q in parts]) for i in range(4)), cols, dt)


def fit_commanded_car(tel, initial: dict, config: RealFitConfig = RealFitConfig(), progress: bool = False) -> RealFitResult:
    """Fit the identified parameters of ``initial`` (facts + initial values) on the telemetry ``tel``
    (one recording or a list of them)."""
    from scipy.optimize import least_squares

    tic = time.perf_counter()
    tels = as_telemetry_list(tel)
    name = ", ".join(t.name for t in tels)
    batch = window_batch(tels, config.horizon_s, config.stride_s, config.sample_s)
    if len(batch) < 5:
        raise MbrlError(f"{name}: too little driving to fit ({len(batch)} windows of {config.horizon_s:g} s)")
    if len(batch) > config.max_windows:
        rng = np.random.default_rng(config.seed)
        batch = batch.take(np.sort(rng.choice(len(batch), config.max_windows, replace=False)))
    dt, s0, u, past, meas, cols = batch.dt, batch.s0, batch.u, batch.past, batch.meas, batch.cols
    w = np.asarray(config.weights, dtype=np.float64)
    names = IDENTIFIED_PARAMS
    lo = np.array([BOUNDS[n][0] for n in names])
    hi = np.array([BOUNDS[n][1] for n in names])
    span = hi - lo
    p0 = np.clip(np.array([initial[n] for n in names], dtype=np.float64), lo, hi)
    z0 = (p0 - lo) / span                                  # normalised 0..1
    fixed = {k: v for k, v in initial.items() if k not in names}
    idx_dead = names.index("steer_dead_time_s")
    n_res = len(batch) * len(cols) * 6
    scale = 1.0 / np.sqrt(len(batch) * len(cols))

    def params_of(Z: np.ndarray) -> SimpleNamespace:      # Z (K, P) -> attributes of shape (K, 1)
        P = lo + span * Z
        ns = SimpleNamespace(**{k: v for k, v in fixed.items()})
        for i, n in enumerate(names):
            setattr(ns, n, P[:, i:i + 1])
        ns.steer_dead_time_s = float(P[0, idx_dead])
        return ns

    def residuals_many(Z: np.ndarray) -> np.ndarray:       # (K, n_res + P)
        pred = rollout(params_of(Z), s0, u, past, dt)[:, :, cols]   # (K, N, S, 6)
        err = pred - meas[None]
        err[..., 2] = np.angle(np.exp(1j * err[..., 2]))
        r = (err * w).reshape(len(Z), -1) * scale
        prior = np.sqrt(config.prior_weight) * (Z - z0)
        out = np.concatenate([r, prior], axis=1)
        return np.where(np.isfinite(out), out, 1e3)

    def fun(z):
        return residuals_many(z[None])[0]

    eps = 1e-4

    def jac(z):
        Z = np.repeat(z[None], len(z) + 1, axis=0)
        steps_ = np.where(z + eps <= 1.0, eps, -eps)
        Z[1:] += np.diag(steps_)
        others = [i for i in range(len(z)) if i != idx_dead]
        R = np.empty((len(z) + 1, n_res + len(z)))
        R[[0] + [i + 1 for i in others]] = residuals_many(Z[[0] + [i + 1 for i in others]])
        R[idx_dead + 1] = residuals_many(Z[idx_dead + 1:idx_dead + 2])[0]
        return ((R[1:] - R[0]) / steps_[:, None]).T

    state = {"it": 0}

    def fun_logged(z):
        r = fun(z)
        state["it"] += 1
        if progress:
            log.info("fit: evaluation %d, cost %.5f", state["it"], 0.5 * float(r @ r))
        return r

    r0 = fun(z0)
    sol = least_squares(fun_logged, z0, jac=jac, bounds=(0.0, 1.0), method="trf", max_nfev=config.max_iterations,
                        x_scale="jac", xtol=1e-8, ftol=1e-8)
    z = sol.x
    params = dict(initial)
    params.update({n: float(v) for n, v in zip(names, lo + span * z)})
    pred = CommandedCarPredictor(params)
    check = pred.predict(s0, u, dt=dt, past_commands=past)
    if not np.all(np.isfinite(check)):
        raise MbrlError(f"{name}: the fitted model predicts NaN on its own windows; no model written")
    return RealFitResult(pred, 0.5 * float(r0 @ r0), float(sol.cost), len(batch), int(sol.nfev),
                         time.perf_counter() - tic)


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
