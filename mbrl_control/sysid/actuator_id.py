"""Identification of a speed-following driver from telemetry: speed-loop gains and steering dead time.

Both from what any car records: the measured states (odometry) and the AckermannDrive commands
sent (``[steering_angle, acceleration, speed]`` per control step). Nothing reads a measured
steering angle (real odometry has none).

* **Speed-loop gains** (:func:`identify_speed_loop`): over one control step the unsaturated loop
  of :mod:`mbrl_control.models.speed_loop` moves the speed towards the set-point by the fraction
  ``1 - exp(-g dt)``; each step gives one gain, the median of each direction is the estimate.
  Steps where the loop saturates (at ``a_max``, or at the power limit above ``v_switch``) or the
  car is nearly stopped are left out.
* **Steering dead time** (:func:`identify_steer_dead_time`): for each candidate delay the
  steering angle is simulated from the commands (rate-limited, :mod:`.rate_limited_steering`),
  and the yaw-rate change over each step is predicted with the chassis of :mod:`.single_track`;
  the delay with the smallest squared error (refined by a parabola through the best three) wins.

:class:`ActuatorIdentifier` does both online, from the first seconds of a run.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numba
import numpy as np

from mbrl_control.config import VehicleParams
from mbrl_control.models.actuation import power_limited_acceleration
from mbrl_control.models.layout import STATE_DIM, S
from mbrl_control.models.single_track import single_track_rates
from mbrl_control.models.steering_actuator import driver_steering_command
from mbrl_control.ops import numpy_ops
from mbrl_control.sysid.calibration_id import ChassisRecord, identify_steering_map, identify_throttle_dead_zone

MIN_SPEED_ERROR_MPS = 0.05
MIN_MOVING_SPEED_MPS = 0.3
SATURATION_MARGIN = 0.85
MIN_SAMPLES = 5
GAIN_WINDOW_PERIODS = 1500
"""The online gains are the medians over the most recent periods (a loop may drift; the cost stays bounded)."""
GAIN_DEADBAND = 0.01
"""An online gain estimate is adopted (and announced) when it moves more than this fraction."""
REGULAR_PERIOD_TOLERANCE = 0.25
"""Two measurements are one control period apart when their interval is within this fraction of it."""
DEAD_TIME_GRID_S = 0.001
DEAD_TIME_COARSE_S = 0.005
DEAD_TIME_SETTLE_S = 0.05
"""After an irregular step the steering simulation is trusted again after the delay span plus this."""
DEAD_TIME_CHUNK_ELEMENTS = 250_000
"""The dead-time scan evaluates this many (delay, substep) points at a time (about 2 MB per array)."""
DEAD_TIME_SPAN_S = 0.08
MIN_DEAD_TIME_SPEED_MPS = 1.0
MIN_DELAY_CONTRAST = 1.05
"""A dead time is reported only when its yaw-rate error is this much below that of no delay."""


@dataclass(frozen=True)
class SpeedLoopEstimate:
    gain_up_per_s: float | None
    gain_down_per_s: float | None
    samples_up: int
    samples_down: int


def _accel_limits(v: np.ndarray, params: VehicleParams) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) acceleration the drive can give at speed ``v`` (power limit above v_switch)."""
    a_max = params.accel_max_mps2
    return power_limited_acceleration(numpy_ops, np.abs(v), params), np.full_like(v, a_max)


@dataclass(frozen=True)
class SpeedLoopSamples:
    """Per control period: the loop gain its speed change says (NaN where it says nothing), the speed
    error the loop saw [m/s], the acceleration limit there [m/s^2] and whether it was speeding up."""

    gain_per_s: np.ndarray
    speed_error_mps: np.ndarray
    limit_mps2: np.ndarray
    up: np.ndarray


def speed_loop_samples(v0_mps: np.ndarray, v1_mps: np.ndarray, v_set_mps: np.ndarray, dt_s: float,
                       params: VehicleParams) -> SpeedLoopSamples:
    """One exponential fit per period: ``v1 - v0 = (v_set - v0) (1 - exp(-g dt))`` (drag added back)."""
    v0, v1, v_set = (np.asarray(a, dtype=np.float64) for a in (v0_mps, v1_mps, v_set_mps))
    a_loop = (v1 - v0) / dt_s + params.drag_coeff_per_m * v0 * np.abs(v0)  # what the loop produced
    err = v_set - v0
    ratio = np.where(np.abs(err) > 0, a_loop * dt_s / np.where(err == 0, 1.0, err), 0.0)
    lim_up, lim_down = _accel_limits(v0, params)
    limit = np.where(err >= 0, lim_up, lim_down)
    ok = ((np.abs(err) >= MIN_SPEED_ERROR_MPS) & (np.abs(v0) >= MIN_MOVING_SPEED_MPS) & (ratio > 1e-3)
          & (ratio < 0.999) & (np.abs(a_loop) < SATURATION_MARGIN * limit) & np.isfinite(ratio))
    gains = np.where(ok, -np.log1p(-np.clip(ratio, 0.0, 0.999)) / dt_s, np.nan)
    return SpeedLoopSamples(gains, np.abs(err), limit, err >= 0)


def speed_loop_gains(samples: SpeedLoopSamples) -> SpeedLoopEstimate:
    """The median gain of each direction, leaving out the periods that estimate says started saturated."""
    ok = np.isfinite(samples.gain_per_s)
    result = []
    for side in (samples.up, ~samples.up):
        mask = ok & side
        gain = None
        for _ in range(3):
            if mask.sum() < MIN_SAMPLES:
                gain = None
                break
            gain = float(np.median(samples.gain_per_s[mask]))
            mask = ok & side & (gain * samples.speed_error_mps < SATURATION_MARGIN * samples.limit_mps2)
        result.append((gain, int(mask.sum())))
    return SpeedLoopEstimate(result[0][0], result[1][0], result[0][1], result[1][1])


def identify_speed_loop(v0_mps: np.ndarray, v1_mps: np.ndarray, v_set_mps: np.ndarray, dt_s: float,
                        params: VehicleParams) -> SpeedLoopEstimate:
    """Gains of the speed loop from consecutive measured speeds and the set-point held between them."""
    return speed_loop_gains(speed_loop_samples(v0_mps, v1_mps, v_set_mps, dt_s, params))


def simulate_rate_limited_steering(commands_rad: np.ndarray, dt_s: float, delays_s: np.ndarray,
                                   params: VehicleParams, substep_s: float = DEAD_TIME_GRID_S) -> np.ndarray:
    """Steering angle (D, N * n_sub + 1) on the substep grid for each delay: the command of control
    step ``k`` is the target from ``k dt + delay``; the wheels turn at ``steer_rate_max`` until on it."""
    n_sub = max(1, int(round(dt_s / substep_s)))
    h = dt_s / n_sub
    cmds = np.clip(np.asarray(commands_rad, dtype=np.float64), params.steer_min_rad, params.steer_max_rad)
    n = len(cmds)
    shift = np.rint(np.asarray(delays_s, dtype=np.float64) / h).astype(int)  # delays on the substep grid
    idx = (np.arange(n * n_sub + 1)[None, :] - shift[:, None]) // n_sub
    targets = cmds[np.clip(idx, 0, n - 1)]
    return _rate_limit(targets, float(cmds[0]), params.steer_rate_max_radps * h)


@numba.njit(cache=True, nogil=True)
def _rate_limit(targets: np.ndarray, start: float, step: float) -> np.ndarray:  # pragma: no cover - compiled
    """``s[j] = s[j-1] + clip(target[j-1] - s[j-1], -step, step)`` per row (a recurrence: compiled, GIL released)."""
    out = np.empty_like(targets)
    for i in range(targets.shape[0]):
        s = start
        out[i, 0] = s
        for j in range(1, targets.shape[1]):
            d = targets[i, j - 1] - s
            s += min(max(d, -step), step)
            out[i, j] = s
    return out


def identify_steer_dead_time(states: np.ndarray, steer_commands_rad: np.ndarray, dt_s: float,
                             params: VehicleParams, span_s: float = DEAD_TIME_SPAN_S,
                             regular: np.ndarray | None = None,
                             continuous: np.ndarray | None = None) -> tuple[float | None, np.ndarray, np.ndarray]:
    """(dead time [s] or None, candidate delays, squared yaw-rate errors) from measured states (N, 7)
    and the steering commands sent at them (N,). ``regular`` (N-1,): the pairs of measurements one
    period apart (the others are left out); ``continuous`` (N-1,): no control step missing between
    the two (after a gap the simulated steering lacks commands: the steps until it settles are left out).

    The delays are scanned every ``DEAD_TIME_COARSE_S``, then every ``DEAD_TIME_GRID_S`` around the
    best (the error is smooth in the delay); ``delays`` holds every candidate evaluated, sorted.
    """
    states = np.asarray(states, dtype=np.float64)
    coarse = np.arange(0.0, span_s + 1e-12, DEAD_TIME_COARSE_S)
    moving = np.minimum(np.abs(states[:-1, S.V]), np.abs(states[1:, S.V])) >= MIN_DEAD_TIME_SPEED_MPS
    if regular is not None:
        moving &= np.asarray(regular, dtype=bool)
    if continuous is not None:
        moving &= _clean_history(np.asarray(continuous, dtype=bool), int(math.ceil((span_s + DEAD_TIME_SETTLE_S) / dt_s)))
    if len(states) < 51 or moving.sum() < 50:
        return None, coarse, np.full(coarse.shape, np.nan)
    errors_of = lambda delays: _yaw_rate_errors(states, steer_commands_rad, dt_s, params, delays, moving)  # noqa: E731
    coarse_errors = errors_of(coarse)
    centre = coarse[int(np.argmin(coarse_errors))]
    fine = np.arange(max(0.0, centre - DEAD_TIME_COARSE_S), min(span_s, centre + DEAD_TIME_COARSE_S) + 1e-12,
                     DEAD_TIME_GRID_S)
    fine = fine[np.min(np.abs(fine[:, None] - coarse[None, :]), axis=1) > 1e-9]  # not evaluated yet
    delays = np.concatenate([coarse, fine])
    errors = np.concatenate([coarse_errors, errors_of(fine)])
    order = np.argsort(delays)
    delays, errors = delays[order], errors[order]
    best = int(np.argmin(errors))
    if best == len(delays) - 1 or errors[0] < MIN_DELAY_CONTRAST * errors[best]:
        return None, delays, errors  # no interior minimum, or the data cannot tell a delay from none
    estimate = float(delays[best])
    if 0 < best < len(delays) - 1 and np.allclose(np.diff(delays[best - 1:best + 2]), DEAD_TIME_GRID_S):
        e_m, e_0, e_p = errors[best - 1], errors[best], errors[best + 1]
        curvature = e_m - 2.0 * e_0 + e_p
        if curvature > 0:
            estimate += 0.5 * (e_m - e_p) / curvature * DEAD_TIME_GRID_S
    return estimate, delays, errors


def _clean_history(regular: np.ndarray, steps: int) -> np.ndarray:
    """Whether each pair and the ``steps`` pairs before it are all regular."""
    irregular = np.convolve(~regular, np.ones(steps + 1), mode="full")[:len(regular)]
    return irregular < 0.5


def _yaw_rate_errors(states: np.ndarray, steer_commands_rad: np.ndarray, dt_s: float, params: VehicleParams,
                     delays_s: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Squared error of the predicted yaw-rate change over the moving steps, for each delay; the
    delays go through in chunks so the working arrays stay near ``DEAD_TIME_CHUNK_ELEMENTS``."""
    n = len(states) - 1
    n_sub = max(1, int(round(dt_s / DEAD_TIME_GRID_S)))
    chunk = max(1, DEAD_TIME_CHUNK_ELEMENTS // (n * n_sub))
    return np.concatenate([_yaw_rate_errors_chunk(states, steer_commands_rad[:n], dt_s, params, delays_s[i:i + chunk], moving)
                           for i in range(0, len(delays_s), chunk)]) if len(delays_s) else np.zeros(0)


def _yaw_rate_errors_chunk(states: np.ndarray, steer_commands_rad: np.ndarray, dt_s: float, params: VehicleParams,
                           delays_s: np.ndarray, moving: np.ndarray) -> np.ndarray:
    n = len(states) - 1
    steer = simulate_rate_limited_steering(steer_commands_rad, dt_s, delays_s, params)
    n_sub = (steer.shape[1] - 1) // n
    h = dt_s / n_sub
    x0, x1 = states[:-1], states[1:]
    a = (x1[:, S.V] - x0[:, S.V]) / dt_s
    frac = (np.arange(n_sub) + 0.5) / n_sub  # substep midpoints
    interp = lambda i: x0[:, i, None] + (x1[:, i] - x0[:, i])[:, None] * frac[None, :]  # noqa: E731  (N, n_sub)
    grid = steer[:, :-1].reshape(len(delays_s), n, n_sub)
    grid_next = steer[:, 1:].reshape(len(delays_s), n, n_sub)
    x = ChassisRecord(steer=0.5 * (grid + grid_next), v=interp(S.V)[None], yaw=interp(S.YAW)[None],
                yaw_rate=interp(S.YAW_RATE)[None], slip=interp(S.SLIP)[None])
    rates = single_track_rates(numpy_ops, x, (grid_next - grid) / h, a[None, :, None], a[None, :, None], params)
    dw_pred = np.asarray(rates[5]).sum(axis=-1) * h  # (D, N)
    dw_meas = x1[:, S.YAW_RATE] - x0[:, S.YAW_RATE]
    return np.sum(((dw_pred - dw_meas[None, :]) ** 2)[:, moving], axis=1)


class ActuatorIdentifier:
    """Online identification of a car's actuators from the run's telemetry.

    ``observe`` every control step (the measured state and the wire command sent at it). With
    ``speed_loop`` (a speed-following driver) the speed gains are re-estimated every
    ``gain_period_steps`` steps once both directions have samples; at each time of ``dead_time_at_s``
    the steering dead time (of a rate-limited servo), or with ``calibration`` the steering map, the
    dead time of the vehicle's first-order servo and the throttle dead zone (:mod:`.calibration_id`).
    ``poll`` returns new estimates once.
    """

    def __init__(self, params: VehicleParams, control_dt_s: float, gain_period_steps: int = 5,
                 dead_time_at_s: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0),
                 max_samples: int = 6000,
                 background: bool = False, speed_loop: bool = True, calibration: bool = False) -> None:
        """``background``: the dead-time search (a few hundred ms) runs in a thread, for a control loop."""
        self.speed_loop = speed_loop
        self.calibration = calibration
        self.params = params
        self.dt_s = float(control_dt_s)
        self.gain_period_steps = gain_period_steps
        self.dead_time_at_s = tuple(sorted(dead_time_at_s))
        self.max_samples = max_samples
        self._states = np.zeros((max_samples, STATE_DIM))  # rows [0, n) are final once written
        self._commands = np.zeros((max_samples, 3))
        self._step_times = np.zeros(max_samples)  # when each control step ran
        self._times = np.zeros(max_samples)  # when its state was measured
        self._n = 0
        self._gain_samples = SpeedLoopSamples(np.full(max_samples, np.nan), np.zeros(max_samples),
                                              np.zeros(max_samples), np.zeros(max_samples, dtype=bool))
        self._n_gain_samples = 0
        self._pending: dict[str, float] = {}
        self.estimates: dict[str, float] = {}
        self.history: list[tuple[float, dict[str, float]]] = []
        self._t0: float | None = None
        self._done_dead_time: set[float] = set()
        self.background = background
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def observe(self, t_s: float, measured: np.ndarray, wire_command: np.ndarray, measured_at_s: float | None = None) -> None:
        """One control step at ``t_s`` (its state measured at ``measured_at_s``, default ``t_s``: e.g. the
        odometry's stamp), copied into preallocated buffers (no allocation that grows with the run)."""
        if self._n >= self.max_samples:
            return
        if self._t0 is None:
            self._t0 = t_s
        self._step_times[self._n] = t_s
        self._times[self._n] = t_s if measured_at_s is None else measured_at_s
        self._states[self._n] = measured
        self._commands[self._n] = wire_command
        self._n += 1
        n = self._n
        if self.speed_loop and n % self.gain_period_steps == 0:
            self._estimate_gains()
        elapsed = t_s - self._t0
        due = [t for t in self.dead_time_at_s if t <= elapsed and t not in self._done_dead_time]
        if due and (self._worker is None or not self._worker.is_alive()):
            self._done_dead_time.update(due)
            if self.background:
                self._worker = threading.Thread(target=self._estimate_dead_time, args=self._arrays(),
                                                name="actuator-id", daemon=True)
                self._worker.start()
            else:
                self._estimate_dead_time(*self._arrays())

    def steering_known(self) -> bool:
        """Whether the steering terms the refit's applied controls need are identified (always, when
        this identifier does not identify the calibration): until then its conversions are guesses."""
        return not self.calibration or {"steer_dead_time_s", "steer_offset_rad"} <= self.estimates.keys()

    def poll(self) -> dict[str, float] | None:
        """New estimates since the last call (``speed_gain_up_per_s``, ``speed_gain_down_per_s``,
        ``steer_dead_time_s``), or None."""
        with self._lock:
            if not self._pending:
                return None
            out, self._pending = self._pending, {}
        return out

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of the steps so far and which pairs are one period apart (rows never written again: safe
        to hand to a thread)."""
        n = self._n
        return (self._states[:n], self._commands[:n], self._regular(0, n - 1),
                regular_periods(self._step_times[:n], self.dt_s))

    def _estimate_gains(self) -> None:
        """Fit the periods completed since the last call, then take the medians over all of them."""
        states, commands = self._states[:self._n], self._commands
        start, stop = self._n_gain_samples, len(states) - 1
        new = speed_loop_samples(states[start:stop, S.V], states[start + 1:stop + 1, S.V], commands[start:stop, 2],
                                 self.dt_s, self.params)
        new.gain_per_s[~self._regular(start, stop)] = np.nan  # a late or missing measurement: not one period
        for name in ("gain_per_s", "speed_error_mps", "limit_mps2", "up"):
            getattr(self._gain_samples, name)[start:stop] = getattr(new, name)
        self._n_gain_samples = stop
        recent = slice(max(0, stop - GAIN_WINDOW_PERIODS), stop)
        est = speed_loop_gains(SpeedLoopSamples(*(getattr(self._gain_samples, name)[recent] for name in
                                                  ("gain_per_s", "speed_error_mps", "limit_mps2", "up"))))
        changed = False
        for key, value in (("speed_gain_up_per_s", est.gain_up_per_s), ("speed_gain_down_per_s", est.gain_down_per_s)):
            old = self.estimates.get(key)
            if value is not None and math.isfinite(value) and (old is None or abs(value - old) > GAIN_DEADBAND * abs(old)):
                changed = True
                with self._lock:
                    self._pending[key] = self.estimates[key] = value
        if changed:
            self.history.append((len(states) * self.dt_s, dict(self.estimates)))

    def _regular(self, start: int, stop: int) -> np.ndarray:
        """Whether the measurements of pairs ``start .. stop - 1`` are one control period apart."""
        return regular_periods(self._times[start:stop + 1], self.dt_s)

    def _estimate_dead_time(self, states: np.ndarray, commands: np.ndarray, regular: np.ndarray,
                            continuous: np.ndarray) -> None:
        found: dict[str, float | None] = {}
        if self.calibration:
            found.update(calibration_estimates(states, commands, self.dt_s, self.params, regular, continuous))
        else:
            found["steer_dead_time_s"], _, _ = identify_steer_dead_time(states, commands[:, 0], self.dt_s, self.params,
                                                                        regular=regular, continuous=continuous)
        found = {key: value for key, value in found.items() if value is not None and math.isfinite(value)}
        if found:
            with self._lock:
                self._pending.update(found)
                self.estimates.update(found)
            self.history.append((len(states) * self.dt_s, dict(self.estimates)))


def calibration_estimates(states: np.ndarray, commands: np.ndarray, dt_s: float, params: VehicleParams,
                          regular: np.ndarray | None, continuous: np.ndarray | None) -> dict[str, float | None]:
    """Steering map and dead time of a servo-steered car and its throttle dead zone, from measured
    states and the wire commands ``[steering_angle, acceleration, speed]`` (None: not identifiable)."""
    raw = driver_steering_command(commands[:, 0], params)
    steering = identify_steering_map(states, raw, dt_s, params, regular=regular, continuous=continuous)
    out: dict[str, float | None] = {"throttle_dead_zone": identify_throttle_dead_zone(states, commands[:, 1], dt_s,
                                                                                      params, regular=regular)}
    if steering is not None:
        out.update(steer_dead_time_s=steering.dead_time_s, steer_offset_rad=steering.steer_offset_rad,
                   steer_gain_left_rad=steering.steer_gain_left_rad, steer_gain_right_rad=steering.steer_gain_right_rad)
    return out


def regular_periods(t_s: np.ndarray, dt_s: float) -> np.ndarray:
    """(N-1,) whether each consecutive pair of times is one period ``dt_s`` apart (``REGULAR_PERIOD_TOLERANCE``)."""
    return np.abs(np.diff(np.asarray(t_s, dtype=np.float64)) - dt_s) <= REGULAR_PERIOD_TOLERANCE * dt_s


def identify_from_drive(drive, params: VehicleParams, calibration: bool = False) -> dict:
    """Speed-loop gains and steering dead time of a recording (``bag.RecordedDrive``: odometry and
    the AckermannDrive commands with their speed field), on the commands' own period; with
    ``calibration`` (a car on the acceleration interface) the steering map, its dead time and the
    throttle dead zone instead."""
    on_commands = states_at_commands(drive)
    if on_commands is None:
        return {"commands": int(len(drive.cmd_t_s))}
    dt, states, commands = on_commands
    regular = regular_periods(commands[:, 3], dt)
    out: dict = {"command_period_s": dt, "commands": int(len(states))}
    if calibration:
        found = calibration_estimates(states, commands[:, :3], dt, params, regular, regular)
        return {**out, **found}
    v0, v1 = states[:-1, S.V], states[1:, S.V]
    loop = identify_speed_loop(v0[regular], v1[regular], commands[:-1, 2][regular], dt, params)
    dead_time, _, _ = identify_steer_dead_time(states, commands[:, 0], dt, params, regular=regular, continuous=regular)
    return {**out, "speed_gain_up_per_s": loop.gain_up_per_s, "speed_gain_down_per_s": loop.gain_down_per_s,
            "samples_up": loop.samples_up, "samples_down": loop.samples_down, "steer_dead_time_s": dead_time}


def states_at_commands(drive) -> tuple[float, np.ndarray, np.ndarray] | None:
    """(command period [s], 7-states (N, 7) interpolated from the odometry at the command times,
    commands (N, 4): steering, acceleration, speed, time) of a recording; None below 60 commands."""
    t_cmd = np.asarray(drive.cmd_t_s, dtype=np.float64)
    if len(t_cmd) < 60:
        return None
    dt = float(np.median(np.diff(t_cmd)))
    inside = (t_cmd >= drive.odom_t_s[0]) & (t_cmd <= drive.odom_t_s[-1])
    t_cmd = t_cmd[inside]
    odom = np.column_stack([np.interp(t_cmd, drive.odom_t_s, drive.odom[:, i]) for i in range(6)])
    states = np.zeros((len(t_cmd), 7))
    speed = np.hypot(odom[:, 3], odom[:, 4])
    states[:, S.X], states[:, S.Y], states[:, S.YAW] = odom[:, 0], odom[:, 1], odom[:, 2]
    states[:, S.V] = np.where(odom[:, 3] >= 0, speed, -speed)
    states[:, S.YAW_RATE] = odom[:, 5]
    states[:, S.SLIP] = np.arctan2(odom[:, 4], np.abs(odom[:, 3]) + 1e-9)
    commands = np.column_stack([drive.cmd[inside, 0], drive.cmd[inside, 1], drive.cmd_speed_mps[inside], t_cmd])
    return dt, states, commands


def identifier_for(config, params: VehicleParams, dt_s: float, background: bool = False) -> ActuatorIdentifier | None:
    """The online identification an :class:`~mbrl_control.control.command_interface.ActuationConfig`
    asks for (the speed-loop gains and dead time of a speed interface with ``identify``; the steering
    map, dead time and throttle dead zone with ``calibration: identify``), or None."""
    speed_loop = config.interface == "speed" and config.identify
    calibration = config.calibration == "identify"
    if not (speed_loop or calibration):
        return None
    return ActuatorIdentifier(params, dt_s, background=background, speed_loop=speed_loop, calibration=calibration)
