"""Identification of a car's calibration from telemetry: steering map, steering dead time, throttle dead zone.

From what any car records, the measured states (odometry) and the AckermannDrive commands sent;
nothing reads a measured steering angle. The models identified are the ones the plant and the
command interface use: :func:`mbrl_control.models.steering_actuator.steering_map` (gains to the
left and right, trim offset) behind the vehicle's first-order servo, a pure dead time of the
steering command, and :mod:`mbrl_control.models.throttle_dead_zone`.

* **Steering** (:func:`identify_steering_map`): for each candidate dead time the servo is simulated
  from the commands through the map, and each period's yaw-rate change is predicted by the chassis
  of :mod:`mbrl_control.models.single_track` (at speeds where it is the tyre model, whose yaw
  acceleration is affine in the steering angle: its two coefficients are evaluated once). The map's
  three terms are fitted by Gauss-Newton for each delay; the delay with the least squared error
  wins (scanned every ``COARSE_DELAY_S``, then every substep around the best, refined by a parabola).
* **Throttle** (:func:`identify_throttle_dead_zone`): each period's measured acceleration (drag
  added back) against the dead-zone map of the commanded acceleration, over a grid of dead zones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numba
import numpy as np

from mbrl_control.config import VehicleParams
from mbrl_control.models.actuation import power_limited_acceleration
from mbrl_control.models.layout import S
from mbrl_control.models.single_track import single_track_rates
from mbrl_control.models.steering_actuator import steering_map
from mbrl_control.models.throttle_dead_zone import MAX_DEAD_ZONE, dead_zone_acceleration
from mbrl_control.ops import numpy_ops

STEER_DELAY_SPAN_S = 0.15
COARSE_DELAY_S = 0.01
SUBSTEP_S = 0.002
"""The servo is simulated on this grid; the delays are multiples of it."""
MIN_SIDE_SAMPLES = 25
"""Periods with a command to one side (beyond ``SIDE_COMMAND``) needed before that side's gain is reported."""
SIDE_COMMAND = 0.1
MIN_STEER_SAMPLES = 100
GAUSS_NEWTON_ITERATIONS = 4
SETTLE_S = 0.3
"""After an irregular period the simulated servo is trusted again after the delay span plus this."""
MIN_THROTTLE_SPEED_MPS = 0.3
MIN_THROTTLE_SAMPLES = 30
DEAD_ZONE_GRID = np.arange(0.0, MAX_DEAD_ZONE, 0.005)


@dataclass(frozen=True)
class SteeringMapEstimate:
    """The identified steering terms (a gain None: too few commands to that side) and the scan."""

    dead_time_s: float | None
    steer_offset_rad: float
    steer_gain_left_rad: float | None
    steer_gain_right_rad: float | None
    delays_s: np.ndarray
    errors: np.ndarray


@dataclass
class ChassisRecord:
    """The chassis equations read the state by name (``x.v``); arrays of any shape."""

    steer: np.ndarray
    v: np.ndarray
    yaw: np.ndarray
    yaw_rate: np.ndarray
    slip: np.ndarray


@numba.njit(cache=True, nogil=True)
def _servo(targets: np.ndarray, start: float, h: float, tau_s: float, rate_max: float, lo: float,
           hi: float) -> np.ndarray:  # pragma: no cover - compiled
    """Midpoint steering angle of each substep of the vehicle's servo (``actuation.steering_servo``,
    explicit Euler) towards ``targets`` (a recurrence: compiled, GIL released)."""
    out = np.empty_like(targets)
    s = start
    for j in range(targets.shape[0]):
        cmd = min(max(targets[j], lo), hi)
        rate = rate_max * math.tanh((cmd - s) / (tau_s * rate_max))
        if (s <= lo and rate < 0.0) or (s >= hi and rate > 0.0):
            rate = 0.0
        s_next = s + h * rate
        out[j] = 0.5 * (s + s_next)
        s = s_next
    return out


class _SteeringProblem:
    """The yaw-rate change of each usable period as an affine function of the simulated steering."""

    def __init__(self, states: np.ndarray, raw_commands: np.ndarray, dt_s: float, params: VehicleParams,
                 usable: np.ndarray) -> None:
        self.params = params
        self.n_sub = max(1, int(round(dt_s / SUBSTEP_S)))
        self.h = dt_s / self.n_sub
        self.raw = np.clip(np.asarray(raw_commands, dtype=np.float64), -1.0, 1.0)
        self.usable = usable
        x0, x1 = states[:-1], states[1:]
        frac = (np.arange(self.n_sub) + 0.5) / self.n_sub
        interp = lambda i: x0[:, i, None] + (x1[:, i] - x0[:, i])[:, None] * frac[None, :]  # noqa: E731
        a = ((x1[:, S.V] - x0[:, S.V]) / dt_s)[:, None]
        record = lambda steer: ChassisRecord(steer=steer, v=interp(S.V), yaw=interp(S.YAW),  # noqa: E731
                                       yaw_rate=interp(S.YAW_RATE), slip=interp(S.SLIP))
        zero = np.zeros((len(x0), self.n_sub))
        rate0 = np.asarray(single_track_rates(numpy_ops, record(zero), zero, a, a, params)[5])
        rate1 = np.asarray(single_track_rates(numpy_ops, record(zero + 1.0), zero, a, a, params)[5])
        self.free = (rate0.sum(axis=1) * self.h)[usable]       # yaw-rate change with straight wheels
        self.per_rad = ((rate1 - rate0) * self.h)[usable]        # and per radian at each substep
        self.measured = (x1[:, S.YAW_RATE] - x0[:, S.YAW_RATE])[usable]

    def residuals(self, delay_s: float, offset_rad: float, gain_left_rad: float, gain_right_rad: float) -> np.ndarray:
        """Predicted minus measured yaw-rate change of the usable periods for these terms."""
        p = self.params
        n = len(self.raw)
        shift = int(round(delay_s / self.h))
        idx = np.clip((np.arange(n * self.n_sub) - shift) // self.n_sub, 0, n - 1)
        terms = SimpleNamespace(steer_offset_rad=offset_rad, steer_gain_left_rad=gain_left_rad,
                                steer_gain_right_rad=gain_right_rad)
        targets = steering_map(numpy_ops, self.raw[idx], terms)
        steer = _servo(targets, float(targets[0]), self.h, p.steer_time_constant_s, p.steer_rate_max_radps,
                       p.steer_min_rad, p.steer_max_rad)
        steer = steer[:(n - 1) * self.n_sub].reshape(n - 1, self.n_sub)[self.usable]
        return self.free + np.sum(self.per_rad * steer, axis=1) - self.measured

    def fit(self, delay_s: float, start: np.ndarray) -> tuple[np.ndarray, float]:
        """Gauss-Newton on (offset, gain left, gain right) at one delay: (terms, squared error)."""
        theta = np.array(start, dtype=np.float64)
        r = self.residuals(delay_s, *theta)
        for _ in range(GAUSS_NEWTON_ITERATIONS):
            steps = np.array([1e-3, 1e-3, 1e-3])
            jac = np.column_stack([(self.residuals(delay_s, *(theta + np.eye(3)[i] * steps[i])) - r) / steps[i]
                                   for i in range(3)])
            delta, *_ = np.linalg.lstsq(jac, -r, rcond=None)
            candidate = np.clip(theta + delta, [-0.2, 0.05, 0.05], [0.2, 1.5, 1.5])
            r_new = self.residuals(delay_s, *candidate)
            if r_new @ r_new >= r @ r:
                break
            theta, r = candidate, r_new
        return theta, float(r @ r)


def steering_usable_periods(states: np.ndarray, dt_s: float, params: VehicleParams, regular: np.ndarray | None,
                            continuous: np.ndarray | None, span_s: float) -> np.ndarray:
    """(N-1,) the periods the steering fit may use: both speeds on the tyre model (at or above
    ``kinematic_blend_high_mps``), one period apart, the commands before them complete."""
    v = states[:, S.V]
    usable = np.minimum(v[:-1], v[1:]) >= params.kinematic_blend_high_mps
    if regular is not None:
        usable &= np.asarray(regular, dtype=bool)
    if continuous is not None:
        steps = int(math.ceil((span_s + SETTLE_S) / dt_s))
        gaps = np.convolve(~np.asarray(continuous, dtype=bool), np.ones(steps + 1), mode="full")[:len(usable)]
        usable &= gaps < 0.5
    usable[:int(math.ceil((span_s + SETTLE_S) / dt_s))] = False  # the simulated servo's unknown start
    return usable


def identify_steering_map(states: np.ndarray, raw_commands: np.ndarray, dt_s: float, params: VehicleParams,
                          regular: np.ndarray | None = None, continuous: np.ndarray | None = None,
                          span_s: float = STEER_DELAY_SPAN_S) -> SteeringMapEstimate | None:
    """The steering map and dead time from measured states (N, 7) and the raw steering commands
    (N,: -1..1, what the linkage receives) sent at them; None with too little driving."""
    states = np.asarray(states, dtype=np.float64)
    usable = steering_usable_periods(states, dt_s, params, regular, continuous, span_s)
    if len(states) < 51 or usable.sum() < MIN_STEER_SAMPLES:
        return None
    problem = _SteeringProblem(states, raw_commands, dt_s, params, usable)
    nominal = np.array([0.0, params.steer_max_rad, params.steer_max_rad])
    results: dict[float, tuple[np.ndarray, float]] = {}

    def scan(delays: np.ndarray) -> None:
        for d in delays:
            key = round(float(d) / problem.h) * problem.h
            if key not in results:
                results[key] = problem.fit(key, nominal)

    scan(np.arange(0.0, span_s + 1e-9, COARSE_DELAY_S))
    centre = min(results, key=lambda d: results[d][1])
    scan(np.arange(max(0.0, centre - COARSE_DELAY_S), min(span_s, centre + COARSE_DELAY_S) + 1e-9, problem.h))
    delays = np.array(sorted(results))
    errors = np.array([results[d][1] for d in delays])
    best = int(np.argmin(errors))
    dead_time = float(delays[best])
    if best == len(delays) - 1:
        dead_time = None  # at the end of the span: longer than the scan can tell
    elif best > 0 and errors[best - 1] - 2 * errors[best] + errors[best + 1] > 0:
        e_m, e_0, e_p = errors[best - 1:best + 2]
        dead_time += 0.5 * (e_m - e_p) / (e_m - 2 * e_0 + e_p) * (delays[best + 1] - delays[best])
    theta = results[delays[best]][0]
    raw = problem.raw[:-1][usable]
    left = int(np.sum(raw > SIDE_COMMAND)) >= MIN_SIDE_SAMPLES
    right = int(np.sum(raw < -SIDE_COMMAND)) >= MIN_SIDE_SAMPLES
    return SteeringMapEstimate(dead_time, float(theta[0]), float(theta[1]) if left else None,
                               float(theta[2]) if right else None, delays, errors)


def identify_throttle_dead_zone(states: np.ndarray, accel_commands_mps2: np.ndarray, dt_s: float,
                                params: VehicleParams, regular: np.ndarray | None = None) -> float | None:
    """The throttle dead zone (fraction of the full command) from measured states (N, 7) and the
    acceleration commands (N,) sent at them; None with too few informative periods."""
    states = np.asarray(states, dtype=np.float64)
    v0, v1 = states[:-1, S.V], states[1:, S.V]
    cmd = np.asarray(accel_commands_mps2, dtype=np.float64)[:len(v0)]
    measured = (v1 - v0) / dt_s + params.drag_coeff_per_m * v0 * np.abs(v0)
    limit = power_limited_acceleration(numpy_ops, np.abs(v0), params)
    a_max = params.accel_max_mps2
    usable = ((np.minimum(np.abs(v0), np.abs(v1)) >= MIN_THROTTLE_SPEED_MPS) & (np.abs(cmd) < 0.98 * a_max)
              & (cmd < 0.95 * limit) & (np.abs(cmd) > 0.02 * a_max) & np.isfinite(measured))
    if regular is not None:
        usable &= np.asarray(regular, dtype=bool)
    if usable.sum() < MIN_THROTTLE_SAMPLES:
        return None
    terms = SimpleNamespace(accel_max_mps2=a_max, throttle_dead_zone=DEAD_ZONE_GRID[:, None])
    predicted = dead_zone_acceleration(numpy_ops, cmd[usable][None, :], terms)
    predicted = np.minimum(predicted, limit[usable][None, :])
    errors = np.sum((predicted - measured[usable][None, :]) ** 2, axis=1)
    best = int(np.argmin(errors))
    zone = float(DEAD_ZONE_GRID[best])
    if 0 < best < len(errors) - 1:
        e_m, e_0, e_p = errors[best - 1:best + 2]
        if e_m - 2 * e_0 + e_p > 0:
            zone += 0.5 * (e_m - e_p) / (e_m - 2 * e_0 + e_p) * (DEAD_ZONE_GRID[1] - DEAD_ZONE_GRID[0])
    return max(0.0, zone)
