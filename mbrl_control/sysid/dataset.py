"""Telemetry datasets: (state, command, next state) on a fixed time grid, with outlier rejection.

Sources:

* the closed loop / a live node: the measured 7-state (steering included) and the command sent
  at each control step (:func:`from_samples`);
* a rosbag2 (:func:`from_drive`): odometry and AckermannDrive commands. Odometry is linearly
  interpolated onto the grid (yaw unwrapped); the command held over ``[t_k, t_k + dt)`` is the
  latest one stamped no later than ``t_k + command_lead_s`` (default half a period, which
  absorbs a small stamping latency). Odometry has no steering angle, so it is **estimated** by
  running the model's steering servo (``steer_rate`` of
  :class:`~mbrl_control.models.bicycle.SingleTrackBase`, first order with time constant ``tau``,
  saturating at the steering-rate limit) on the commanded steering, starting straight; the
  parametric fit then excludes the steering from its error and re-estimates it with the fitted
  ``tau`` inside its residual (see :mod:`.identify`).

Outliers: non-finite samples, samples a Hampel filter flags (further than ``outlier_sigmas``
robust sigmas from the median of their neighbourhood, per measured state) and grid points inside
odometry gaps make the transitions touching them invalid, and so does a pose change that
contradicts the measured velocities (position / heading jumps); windows for multi-step fits use
only runs of valid transitions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numba
import numpy as np

import mbrl_control.kernels  # noqa: F401  (before the njit below: selects the Numba cache folder)
from mbrl_control import MbrlError
from mbrl_control.bag import RecordedDrive
from mbrl_control.config import VehicleParams
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S, U
from mbrl_control.sysid.config import DatasetConfig

LOG = logging.getLogger("mbrl_control.sysid")

OUTLIER_FLOORS = {S.X: 0.05, S.Y: 0.05, S.YAW: 0.02, S.V: 0.1, S.YAW_RATE: 0.2, S.SLIP: 0.02}
"""Smallest robust sigma per state in the Hampel filter (so smooth or constant signals flag nothing)."""


@dataclass
class Dataset:
    """Samples on a fixed grid: ``controls[k]`` is held over ``[t_s[k], t_s[k] + dt_s)``.

    ``valid[k]`` says whether the transition ``k -> k+1`` may be used.
    """

    dt_s: float
    t_s: np.ndarray  # (N,)
    states: np.ndarray  # (N, 7)
    controls: np.ndarray  # (N, 2)
    valid: np.ndarray  # (N - 1,) bool
    steer_measured: bool = True

    def __post_init__(self) -> None:
        n = len(self.t_s)
        if self.states.shape != (n, STATE_DIM) or self.controls.shape != (n, CONTROL_DIM) or self.valid.shape != (max(n - 1, 0),):
            raise ValueError("inconsistent dataset shapes")

    def __len__(self) -> int:
        return len(self.t_s)

    @property
    def duration_s(self) -> float:
        return float(len(self) * self.dt_s)

    @property
    def transitions(self) -> int:
        return int(self.valid.sum())

    def segment(self, start: int, stop: int) -> "Dataset":
        """Samples ``[start, stop)`` (transitions inside the slice only)."""
        start, stop = max(0, start), min(len(self), stop)
        stop = max(stop, start)
        return replace(self, t_s=self.t_s[start:stop], states=self.states[start:stop], controls=self.controls[start:stop],
                       valid=self.valid[start:max(stop - 1, start)])

    def split(self, fraction: float) -> tuple["Dataset", "Dataset"]:
        """(head, tail) with the last ``fraction`` of the samples in the tail (time order kept)."""
        cut = int(round(len(self) * (1.0 - fraction)))
        return self.segment(0, cut), self.segment(cut, len(self))

    def window_starts(self, horizon: int, stride: int = 1, max_windows: int | None = None) -> np.ndarray:
        """Starts ``k`` whose ``horizon`` transitions ``k .. k+horizon-1`` are all valid (every ``stride``-th)."""
        n = len(self.valid) - horizon + 1
        if n <= 0:
            return np.zeros(0, dtype=int)
        bad = np.concatenate(([0], np.cumsum(~self.valid)))
        ok = (bad[horizon:horizon + n] - bad[:n]) == 0
        starts = np.flatnonzero(ok)[::stride]
        if max_windows is not None and len(starts) > max_windows:
            starts = starts[np.linspace(0, len(starts) - 1, max_windows).round().astype(int)]
        return starts

    def windows(self, starts: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(initial states (W, 7), controls (W, H, 2), following states (W, H, 7)) of the windows."""
        idx = starts[:, None] + np.arange(horizon + 1)[None, :]
        return self.states[starts], self.controls[idx[:, :-1]], self.states[idx[:, 1:]]


def _hampel_flags(values: np.ndarray, half_width: int, sigmas: float, floor: float) -> np.ndarray:
    """True where a sample is further than ``sigmas`` robust sigmas from its neighbourhood median."""
    n = len(values)
    if n < 2 * half_width + 1:
        return np.zeros(n, dtype=bool)
    padded = np.pad(values, half_width, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(padded, 2 * half_width + 1)
    med = np.median(win, axis=1)
    mad = 1.4826 * np.median(np.abs(win - med[:, None]), axis=1)
    return np.abs(values - med) > sigmas * np.maximum(mad, floor)


def _inconsistent_transitions(states: np.ndarray, dt_s: float, sigmas: float) -> np.ndarray:
    """Transitions whose pose change disagrees with the measured velocities (trapezoidal dead reckoning).

    A position or heading jump, which a Hampel filter on the fast-moving pose cannot see, shows up
    here as a large error on the two transitions touching it; the robust scale is the series' MAD.
    """
    s = states
    heading = s[:, S.YAW] + s[:, S.SLIP]
    rates = {S.X: s[:, S.V] * np.cos(heading), S.Y: s[:, S.V] * np.sin(heading), S.YAW: s[:, S.YAW_RATE]}
    bad = np.zeros(len(s) - 1, dtype=bool)
    for idx, rate in rates.items():
        err = np.diff(s[:, idx]) - 0.5 * dt_s * (rate[1:] + rate[:-1])
        err = np.where(np.isfinite(err), err, np.inf)
        finite = err[np.isfinite(err)]
        med = np.median(finite) if len(finite) else 0.0
        mad = 1.4826 * np.median(np.abs(finite - med)) if len(finite) else 0.0
        bad |= np.abs(err - med) > sigmas * max(mad, OUTLIER_FLOORS[idx] * 0.2)
    return bad


def reject_outliers(states: np.ndarray, valid: np.ndarray, config: DatasetConfig, dt_s: float | None = None) -> tuple[np.ndarray, int]:
    """``valid`` without the transitions touching an outlier sample (and, given ``dt_s``, without those whose
    pose change contradicts the measured velocities); also the number of outlier samples."""
    bad = ~np.all(np.isfinite(states), axis=1)
    clean = np.where(np.isfinite(states), states, 0.0)
    for idx, floor in OUTLIER_FLOORS.items():
        bad |= _hampel_flags(clean[:, idx], config.outlier_window, config.outlier_sigmas, floor)
    out = valid & ~bad[:-1] & ~bad[1:]
    if dt_s is not None and len(states) > 1:
        out &= ~_inconsistent_transitions(states, dt_s, config.outlier_sigmas)
    return out, int(bad.sum())


def from_samples(t_s: np.ndarray, states: np.ndarray, controls: np.ndarray, dt_s: float,
                 config: DatasetConfig | None = None, steer_measured: bool = True) -> Dataset:
    """A dataset from per-control-step samples (state measured at ``t_s[k]``, command sent then).

    Samples already on the grid are used as they are; irregular ones are resampled (states
    linearly, commands zero-order hold).
    """
    config = config or DatasetConfig()
    t_s = np.asarray(t_s, dtype=np.float64)
    states = np.asarray(states, dtype=np.float64).reshape(-1, STATE_DIM)
    controls = np.asarray(controls, dtype=np.float64).reshape(-1, CONTROL_DIM)
    if not (len(t_s) == len(states) == len(controls)):
        raise MbrlError("telemetry: times, states and controls differ in length")
    if len(t_s) < 2:
        return Dataset(dt_s, t_s, states, controls, np.zeros(max(len(t_s) - 1, 0), bool), steer_measured)
    steps = np.diff(t_s)
    if np.all(np.abs(steps - dt_s) < 1e-6 * max(dt_s, 1.0) + 1e-9):
        valid = np.ones(len(t_s) - 1, dtype=bool)
    else:
        grid = np.arange(t_s[0], t_s[-1] + 1e-9, dt_s)
        new_states = np.stack([np.interp(grid, t_s, states[:, j]) for j in range(STATE_DIM)], axis=1)
        controls = controls[_hold_index(t_s, grid, _lead(config, dt_s))]
        valid = _gap_free(t_s, grid, config.max_gap_s)
        t_s, states = grid, new_states
    valid, _ = reject_outliers(states, valid, config, dt_s)
    return Dataset(dt_s, t_s, states, controls, valid, steer_measured)


def _lead(config: DatasetConfig, dt_s: float) -> float:
    return 0.5 * dt_s if config.command_lead_s < 0 else config.command_lead_s


def _hold_index(cmd_t_s: np.ndarray, grid: np.ndarray, lead_s: float) -> np.ndarray:
    """Index of the command held at each grid time: the latest stamped no later than ``t + lead_s`` (first if none)."""
    return np.clip(np.searchsorted(cmd_t_s, grid + lead_s, side="right") - 1, 0, len(cmd_t_s) - 1)


def _gap_free(sample_t_s: np.ndarray, grid: np.ndarray, max_gap_s: float) -> np.ndarray:
    """Per grid transition: both ends lie between samples at most ``max_gap_s`` apart."""
    after = np.clip(np.searchsorted(sample_t_s, grid, side="left"), 1, len(sample_t_s) - 1)
    gap = sample_t_s[after] - sample_t_s[after - 1]
    ok = gap <= max_gap_s
    return ok[:-1] & ok[1:]


def odometry_states(odom: np.ndarray, steer_rad: np.ndarray) -> np.ndarray:
    """7-states (N, 7) from odometry rows (x, y, yaw, vx_body, vy_body, yaw_rate) and a steering angle.

    Vectorised :func:`mbrl_control.models.odometry.odometry_to_state`: signed speed, side slip
    ``atan2(vy, |vx|)`` (sign flipped when reversing), zero slip below 1 mm/s.
    """
    x, y, yaw, vx, vy, wz = (odom[:, j] for j in range(6))
    speed = np.hypot(vx, vy)
    v = np.where(vx >= 0, speed, -speed)
    slip = np.where(speed > 1e-3, np.arctan2(vy, np.abs(vx)), 0.0)
    slip = np.where(vx < 0, -slip, slip)
    s = np.zeros((len(odom), STATE_DIM))
    s[:, S.X], s[:, S.Y], s[:, S.STEER], s[:, S.V] = x, y, steer_rad, v
    s[:, S.YAW], s[:, S.YAW_RATE], s[:, S.SLIP] = yaw, wz, slip
    return s


@numba.njit(cache=True)
def _servo_scan(steer_cmd: np.ndarray, dt_s: float, substeps: int, tau_s: float, rate_max: float,
                steer_min: float, steer_max: float, steer0: float) -> np.ndarray:  # pragma: no cover - numba
    """Steering after each grid step under zero-order-hold commands (RK4 of SingleTrackBase.steer_rate)."""
    n = steer_cmd.shape[0]
    out = np.empty(n)
    d = steer0
    h = dt_s / substeps
    scale = 1.0 / (tau_s * rate_max)
    for k in range(n):
        out[k] = d
        cmd = min(max(steer_cmd[k], steer_min), steer_max)
        for _ in range(substeps):
            k1 = _servo_rate(d, cmd, scale, rate_max, steer_min, steer_max)
            k2 = _servo_rate(d + 0.5 * h * k1, cmd, scale, rate_max, steer_min, steer_max)
            k3 = _servo_rate(d + 0.5 * h * k2, cmd, scale, rate_max, steer_min, steer_max)
            k4 = _servo_rate(d + h * k3, cmd, scale, rate_max, steer_min, steer_max)
            d = d + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return out


@numba.njit(cache=True, inline="always")
def _servo_rate(d: float, cmd: float, scale: float, rate_max: float, steer_min: float, steer_max: float) -> float:  # pragma: no cover
    rate = rate_max * np.tanh((cmd - d) * scale)
    if (d <= steer_min and rate < 0.0) or (d >= steer_max and rate > 0.0):
        return 0.0
    return rate


def estimate_steering(steer_cmd_rad: np.ndarray, dt_s: float, params: VehicleParams, substeps: int = 1,
                      steer0_rad: float = 0.0) -> np.ndarray:
    """Steering angle at each grid time from the commanded steering through the servo model.

    ``out[k]`` is the angle at ``t_k``, before ``steer_cmd_rad[k]`` acts (RK4, ``substeps`` per step).
    """
    cmd = np.ascontiguousarray(steer_cmd_rad, dtype=np.float64)
    if len(cmd) == 0:
        return np.zeros(0)
    return _servo_scan(cmd, float(dt_s), int(substeps), params.steer_time_constant_s, params.steer_rate_max_radps,
                       params.steer_min_rad, params.steer_max_rad, float(steer0_rad))


def with_steering(dataset: Dataset, params: VehicleParams, substeps: int = 1) -> Dataset:
    """The dataset with its steering column replaced by the servo estimate for ``params``' time constant."""
    states = dataset.states.copy()
    states[:, S.STEER] = estimate_steering(dataset.controls[:, U.STEER_CMD], dataset.dt_s, params, substeps)
    return replace(dataset, states=states, steer_measured=False)


def from_drive(drive: RecordedDrive, dt_s: float, params: VehicleParams, config: DatasetConfig | None = None,
               substeps: int = 1) -> Dataset:
    """A dataset from a recorded drive (bag): odometry interpolated onto the grid, commands held, steering estimated."""
    config = config or DatasetConfig()
    if len(drive.cmd_t_s) == 0:
        raise MbrlError("recording has no drive commands")
    if len(drive.odom_t_s) < 3:
        raise MbrlError("recording has fewer than 3 odometry messages")
    order = np.argsort(drive.odom_t_s, kind="stable")
    odom_t, odom = drive.odom_t_s[order], drive.odom[order]
    cmd_order = np.argsort(drive.cmd_t_s, kind="stable")
    cmd_t, cmd = drive.cmd_t_s[cmd_order], drive.cmd[cmd_order]
    start = max(odom_t[0], cmd_t[0])
    grid = np.arange(start, odom_t[-1] + 1e-9, dt_s)
    if len(grid) < 3:
        raise MbrlError("recording is too short for the model grid")
    rows = np.stack([np.interp(grid, odom_t, odom[:, j]) for j in range(odom.shape[1])], axis=1)
    controls = cmd[_hold_index(cmd_t, grid, _lead(config, dt_s))]
    steer = estimate_steering(controls[:, U.STEER_CMD], dt_s, params, substeps)
    states = odometry_states(rows, steer)
    valid = _gap_free(odom_t, grid, config.max_gap_s)
    valid, outliers = reject_outliers(states, valid, config, dt_s)
    if outliers:
        LOG.info("dataset: %d outlier samples rejected", outliers)
    return Dataset(dt_s, grid - grid[0], states, controls, valid, steer_measured=False)
