"""The offline closed loop: plant + controller (+ online sysid) at the control rate, measured.

Deterministic for a seed (simulated time; only the recorded step latencies are wall-clock).
Writes the run folder of DESIGN.md: ``summary.json``, ``telemetry.mcap``, ``plot.png``.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from mbrl_control.bag import TelemetryWriter
from mbrl_control.control.base import Controller, guard_command
from mbrl_control.control.command_interface import CALIBRATION_TERMS, ActuationConfig, CommandInterface
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S
from mbrl_control.models.metrics import open_loop_errors
from mbrl_control.sim.plant import Plant, initial_state_at
from mbrl_control.sysid.applied_controls import AppliedControls
from mbrl_control.track import Track, wrap_angle

MODEL_RMSE_HORIZON_S = 1.0
GC_PERIOD_STEPS = 250  # a full garbage collection between control steps every this many steps (5 s at 50 Hz)


@contextlib.contextmanager
def garbage_collection_between_steps():
    """Python's automatic garbage collection off for the loop; yields ``collect(step)`` to call between steps.

    Why: an automatic full collection lands wherever an allocation trips the threshold, inside a
    timed control step too, and takes 100-200 ms in a run with online sysid (measured: 213 ms),
    a missed deadline that is the runner's, not the controller's. The loop collects between steps.
    """
    was_enabled = gc.isenabled()
    gc.disable()

    def collect(step: int) -> None:
        if step % GC_PERIOD_STEPS == 0:
            gc.collect()

    try:
        yield collect
    finally:
        if was_enabled:
            gc.enable()


class OnlineModelUpdater(Protocol):
    """What the runner needs from online system identification (see :mod:`mbrl_control.sysid`)."""

    def observe(self, t_s: float, state: np.ndarray, control: np.ndarray) -> None:
        """One control period's measured state and the command sent at it."""

    def poll_new_model(self):
        """An accepted new model, once, or None; must return at once (the refit runs elsewhere)."""

    def close(self) -> None:
        ...


@dataclass
class RunConfig:
    laps: int = 2
    control_rate_hz: float = 50.0
    max_time_s: float | None = None  # default: generous multiple of the expected lap time
    seed: int = 0
    plan_record_every: int = 5  # record the planned path every N control steps
    off_track_for_good_s: float = 1.0  # outside the bounds this long: left the track for good
    stopped_for_s: float = 3.0  # slower than 0.05 m/s this long (after the start): stopped
    progress: bool = True  # print progress to stderr


@dataclass
class RunLog:
    """Per-control-step records (arrays after ``finish``)."""

    t_s: list = field(default_factory=list)
    state: list = field(default_factory=list)  # true state at the step
    measured: list = field(default_factory=list)
    control: list = field(default_factory=list)
    latency_ms: list = field(default_factory=list)
    progress_m: list = field(default_factory=list)
    lateral_m: list = field(default_factory=list)
    inside: list = field(default_factory=list)
    model_version: list = field(default_factory=list)

    def finish(self) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, np.asarray(getattr(self, name)))


class ClosedLoop:
    """Runs a controller against a plant on a track, lap by lap."""

    def __init__(self, track: Track, plant: Plant, controller: Controller, config: RunConfig | None = None,
                 metrics_model=None, updater: OnlineModelUpdater | None = None,
                 interface: CommandInterface | None = None, actuator_identifier=None) -> None:
        """``interface`` turns each command into the AckermannDrive fields the plant's driver follows
        (default: the acceleration interface); ``actuator_identifier`` (e.g.
        :class:`~mbrl_control.sysid.actuator_id.ActuatorIdentifier`) identifies it online."""
        self.track = track
        self.plant = plant
        self.controller = controller
        self.config = config or RunConfig()
        self.dt_s = 1.0 / self.config.control_rate_hz
        self.metrics_model = metrics_model
        self.updater = updater
        self.dt_s = 1.0 / self.config.control_rate_hz
        self.interface = interface or CommandInterface(ActuationConfig(), plant.params, self.dt_s)
        self.actuator_identifier = actuator_identifier
        self._applied = None  # the online refit learns from the controls the car applied (acceleration, servo)
        if self.interface.interface == "acceleration" and self.interface.config.steering == "servo":
            self._applied = AppliedControls(plant.params, self.dt_s, self.interface.calibration, self.interface.dead_time_s)
        self.models: list = []  # (t_s, model) of every model the controller used

    def expected_lap_s(self) -> float:
        ref = self.track.reference_lap_time_s
        return ref if ref is not None else self.track.length_m / 3.0

    def run(self) -> tuple[dict, RunLog]:
        cfg = self.config
        params = self.plant.params
        x0, y0, yaw0 = self.track.start_pose()
        self.plant.reset(initial_state_at(x0, y0, yaw0, 0.0, params))
        measured = self.plant.measure()
        self.controller.reset(measured)
        self.interface.reset()
        model = self.controller.model if self.controller.model is not None else self.metrics_model
        self.models = [(0.0, copy.deepcopy(model))] if model is not None else []
        max_time = cfg.max_time_s or (cfg.laps * self.expected_lap_s() * 3.0 + 20.0)
        log = RunLog()
        laps_done, lap_start_t, lap_times = 0, 0.0, []
        proj = self.track.project(self.plant.state[[S.X, S.Y]])  # of the true state; carried to the next step
        traveled, prev_progress = 0.0, float(proj.progress_m)
        outside_since, slow_since, failed = None, None, False
        length = self.track.length_m
        t = 0.0
        step = 0
        with garbage_collection_between_steps() as collect_garbage:
            while laps_done < cfg.laps and t < max_time:
                true_state = self.plant.state
                tic = time.perf_counter()
                planned_from = self.interface.predict(measured)  # where the car is when this command acts
                raw = self._safe_step(planned_from)
                command, _ = guard_command(raw, measured, params, self.dt_s)
                wire = self.interface.wire_command(command, planned_from)
                latency_ms = (time.perf_counter() - tic) * 1e3
                right, left = self.track.widths_at(proj.progress_m)
                inside = bool(-right <= proj.lateral_m <= left)
                log.t_s.append(t); log.state.append(true_state); log.measured.append(measured)
                log.control.append(command); log.latency_ms.append(latency_ms)
                log.progress_m.append(float(proj.progress_m)); log.lateral_m.append(float(proj.lateral_m))
                log.inside.append(inside); log.model_version.append(len(self.models) - 1)
                self._record(step, t, measured, command, wire)
                self._identify_actuators(t, measured, wire)
                if self.updater is not None:
                    applied = self._applied_control(command, wire)
                    if self.actuator_identifier is None or self.actuator_identifier.steering_known():
                        self.updater.observe(t, measured, applied)  # not before the car's actuators are known
                    new_model = self.updater.poll_new_model()
                    if new_model is not None:
                        try:
                            self.controller.set_model(new_model)
                        except NotImplementedError:
                            pass  # a model-free controller: the model is tracked for the metrics only
                        self.models.append((t, copy.deepcopy(new_model)))
                measured = self.plant.advance(wire, self.dt_s)
                t += self.dt_s
                step += 1
                proj = self.track.project(self.plant.state[[S.X, S.Y]])
                new_progress = float(proj.progress_m)
                traveled += math.remainder(new_progress - prev_progress, length)
                prev_progress = new_progress
                if traveled >= (laps_done + 1) * length:
                    laps_done += 1
                    lap_times.append(t - lap_start_t)
                    lap_start_t = t
                    self._say(f"lap {laps_done}/{cfg.laps}: {lap_times[-1]:.2f} s")
                outside_since = None if inside else (t if outside_since is None else outside_since)
                slow = abs(self.plant.state[S.V]) < 0.05 and t > cfg.stopped_for_s
                slow_since = None if not slow else (t if slow_since is None else slow_since)
                if (outside_since is not None and t - outside_since >= cfg.off_track_for_good_s) or (
                        slow_since is not None and t - slow_since >= cfg.stopped_for_s):
                    failed = True
                    self._say(f"stopped at t={t:.1f} s: {'left the track' if outside_since is not None else 'car stopped'}")
                    break
                if cfg.progress and step % 500 == 0:
                    self._say(f"t={t:6.1f} s  lap {laps_done + 1}/{cfg.laps}  {100 * (traveled % length) / length:5.1f} %  v={self.plant.state[S.V]:.2f} m/s")
                collect_garbage(step)  # between steps: never inside a timed control step
        if self.updater is not None:
            self.updater.close()
        log.finish()
        summary = self.summarize(log, laps_done, lap_times, failed or laps_done < cfg.laps)
        return summary, log

    def _safe_step(self, measured: np.ndarray) -> np.ndarray:
        """The controller's command; an exception becomes a NaN command (then a guarded safe stop)."""
        try:
            return self.controller.step(measured)
        except Exception as exc:  # the loop never dies on a controller fault
            self._say(f"controller raised {type(exc).__name__}: {exc}; commanding a safe stop")
            return np.full(CONTROL_DIM, np.nan)

    def attach_telemetry(self, writer: TelemetryWriter | None) -> None:
        self._writer = writer

    def _applied_control(self, command: np.ndarray, wire: np.ndarray) -> np.ndarray:
        """What the car did with ``wire`` through its actuators as the interface knows them now (the
        planned ``command`` for a speed-following driver, whose loop the refit does not model)."""
        if self._applied is None:
            return command
        self._applied.dead_time_s = self.interface.dead_time_s
        return self._applied.applied(wire)

    def _identify_actuators(self, t: float, measured: np.ndarray, wire: np.ndarray) -> None:
        """Feed the online actuator identification; adopt what it has found (between steps)."""
        if self.actuator_identifier is None:
            return
        self.actuator_identifier.observe(t, measured, wire)
        found = self.actuator_identifier.poll()
        if found:
            self.interface.adopt(found)

    def _record(self, step: int, t: float, measured: np.ndarray, command: np.ndarray, wire: np.ndarray) -> None:
        writer = getattr(self, "_writer", None)
        if writer is None:
            return
        writer.odometry(t, measured)
        writer.command(t, wire[:CONTROL_DIM], float(wire[2]))  # what went on the wire (steering as published)
        plan = self.controller.planned_xy()
        if plan is not None and step % self.config.plan_record_every == 0:
            writer.planned_path(t, plan)

    def _say(self, text: str) -> None:
        if self.config.progress:
            print(f"[sim] {text}", file=sys.stderr, flush=True)

    def model_rmse(self, log: RunLog, model) -> float | None:
        """1 s open-loop position RMSE of ``model`` on the last lap (or the last 20 %) of the run."""
        if model is None or len(log.t_s) < 2:
            return None
        horizon = int(round(MODEL_RMSE_HORIZON_S / self.dt_s))
        m = copy.copy(model)
        m.dt_s = self.dt_s
        n = len(log.t_s)
        start = max(0, min(int(0.8 * n), n - 10 * horizon))
        states, controls = log.state[start:], log.control[start:]
        _, err = open_loop_errors(m, states, controls, horizon, stride=5)
        return float(np.sqrt(np.mean(err**2))) if len(err) else None

    def model_error_series(self, log: RunLog, stride: int = 25) -> tuple[np.ndarray, np.ndarray]:
        """(t, 1 s open-loop position error) of the model in use at each window start."""
        horizon = int(round(MODEL_RMSE_HORIZON_S / self.dt_s))
        if not self.models or len(log.t_s) <= horizon:
            return np.zeros(0), np.zeros(0)
        starts = np.arange(0, len(log.t_s) - horizon, stride)
        errors = np.zeros(len(starts))
        for version, (_, model) in enumerate(self.models):
            mask = log.model_version[starts] == version
            if mask.any():
                m = copy.copy(model)
                m.dt_s = self.dt_s
                _, errors[mask] = open_loop_errors(m, log.state, log.control, horizon, starts=starts[mask])
        return log.t_s[starts], errors

    def summarize(self, log: RunLog, laps_done: int, lap_times: list, failed: bool) -> dict:
        """The summary.json fields of DESIGN.md for a finished run (also used by the ROS demo)."""
        lat = np.abs(log.lateral_m) if len(log.lateral_m) else np.zeros(1)
        speed = log.state[:, S.V] if len(log.state) else np.zeros(1)
        lat_ms = log.latency_ms if len(log.latency_ms) else np.zeros(1)
        period_ms = 1e3 * self.dt_s
        initial = self.models[0][1] if self.models else None
        final = self.models[-1][1] if self.models else None
        return {
            "track": self.track.name,
            "plant": self.plant.name,
            "controller": self.controller.name,
            "model": getattr(self, "model_name", None),
            "laps_completed": laps_done,
            "lap_times_s": [round(x, 3) for x in lap_times],
            "reference_lap_time_s": None if self.track.reference_lap_time_s is None else round(self.track.reference_lap_time_s, 3),
            "track_violations": int(np.sum(~log.inside.astype(bool))) if len(log.inside) else 0,
            "collisions_or_stops": bool(failed),
            "lateral_error_m": {"mean": float(lat.mean()), "max": float(lat.max())},
            "speed_mps": {"mean": float(speed.mean()), "max": float(speed.max())},
            "step_latency_ms": {"p50": float(np.percentile(lat_ms, 50)), "p99": float(np.percentile(lat_ms, 99)), "max": float(lat_ms.max())},
            "deadline_misses": int(np.sum(lat_ms > period_ms)),
            "control_rate_hz": self.config.control_rate_hz,
            "model_rmse": {"initial": self.model_rmse(log, initial), "final": self.model_rmse(log, final)},
            "model_swaps": max(0, len(self.models) - 1),
            "actuation": self._actuation_summary(),
            "lap_lateral_error_mean_m": self._per_lap_lateral(log),
            "seed": self.config.seed,
        }

    def _actuation_summary(self) -> dict:
        """The plant's driver, the interface the controller was told and what it identified."""
        plant_act = getattr(self.plant, "actuation", None)
        kind = "acceleration" if plant_act is None else ("speed" if plant_act.interface == "speed" else "miscalibrated")
        out = {"plant": kind, "interface": self.interface.interface}
        calibrated = kind == "miscalibrated" or self.interface.config.calibration == "identify"
        shown = (("steer_dead_time_s", *CALIBRATION_TERMS) if calibrated
                 else ("speed_gain_up_per_s", "speed_gain_down_per_s", "steer_dead_time_s"))
        if plant_act is not None:
            out["plant_terms"] = {name: getattr(plant_act, name) for name in shown}
        terms = self.interface.terms()
        out["controller_terms"] = {name: terms[name] for name in shown}
        if self.actuator_identifier is not None:
            out["identified_at_s"] = [[round(t, 2), est] for t, est in self.actuator_identifier.history[-40:]]
        return out

    def _per_lap_lateral(self, log: RunLog) -> list[float]:
        if len(log.progress_m) == 0:
            return []
        traveled = np.concatenate(([0.0], np.cumsum([math.remainder(d, self.track.length_m) for d in np.diff(log.progress_m)])))
        lap_index = np.floor(traveled / self.track.length_m).astype(int)
        return [float(np.mean(np.abs(log.lateral_m[lap_index == k]))) for k in range(lap_index.max() + 1)]


def write_run(out_dir: Path, loop: ClosedLoop) -> dict:
    """Run ``loop`` with telemetry recording into ``out_dir``; write summary.json and plot.png.

    The folder is checked to be writable before the run. Every file is written atomically; a write
    that fails during or after the run (a full disk) does not lose the run: the others are still
    written, the failures (path, reason) are listed in ``loop.write_failures`` for the caller to
    report, and the summary is returned.
    """
    from mbrl_control.config import atomic_write_json, ensure_writable_dir

    ensure_writable_dir(out_dir, "run folder")
    failures: list[tuple[str, str]] = []
    loop.write_failures = failures
    with TelemetryWriter(out_dir / "telemetry.mcap") as writer:
        loop.attach_telemetry(writer)
        try:
            summary, log = loop.run()
        finally:
            loop.attach_telemetry(None)
    if writer.error is not None:
        failures.append((str(out_dir / "telemetry.mcap"), writer.error.strerror or str(writer.error)))
    try:
        atomic_write_json(out_dir / "summary.json", summary)
    except OSError as exc:
        failures.append((str(out_dir / "summary.json"), exc.strerror or str(exc)))
    from mbrl_control.sim.plot import plot_run

    try:
        plot_run(out_dir / "plot.png", loop.track, log, loop.model_error_series(log), summary, 1e3 * loop.dt_s)
    except OSError as exc:
        failures.append((str(out_dir / "plot.png"), exc.strerror or str(exc)))
    return summary


def write_failure_message(failures: list[tuple[str, str]], kept: str) -> str:
    """One line for the files of a run that could not be written."""
    first, reason = failures[0]
    more = f" (and {len(failures) - 1} more file{'s' if len(failures) > 2 else ''})" if len(failures) > 1 else ""
    return f"cannot write {first}: {reason}{more}; {kept}"
