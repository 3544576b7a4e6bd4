"""``mbrl-control replay BAG``: a recorded drive seen through a model and a controller, offline.

Two questions about a recording, answered without the car:

* **model**: how well does a prediction model (``--model``, default ``dynamic``; a fitted model
  file from ``fit``) predict the drive? The odometry is resampled onto the control grid
  (:func:`mbrl_control.sysid.dataset.from_drive`: commands held, steering estimated through the
  servo model, gaps and outliers excluded) and every window of ``--horizon`` seconds is
  predicted open loop from its recorded start state with the recorded commands; the position
  error at the window's end, along the drive, and its RMSE are reported, next to the same for
  a reference model (``--reference-model``, default the nominal ``dynamic``) and at shorter
  horizons.
* **controller**: what would the controller (``--controller``, ``--config``) have commanded on
  the recorded states, and how long does each step take? It is stepped in order on every grid
  state (its warm start carries over as on the car, though the car did not follow its
  commands); its commands are compared with the recorded ones and its step times with the
  control period and with the recorded command intervals.

A bag without commands gets the controller part only. The track comes from ``--track``, else
from the ``summary.json`` of the run folder the bag was written into by ``sim``; without
either, the controller part is skipped. Writes ``replay.json`` and ``replay.png`` into
``--out`` (default ``runs/replay-<timestamp>``) and prints the report.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mbrl_control import MbrlError
from mbrl_control.bag import RecordedDrive, add_bag_arguments, drive_read_config, read_drive
from mbrl_control.config import VehicleParams, atomic_write_json, cli_number, ensure_writable_dir, load_vehicle_params
from mbrl_control.models.layout import CONTROL_DIM, S, U

SHORT_HORIZONS_S = (0.1, 0.25, 0.5)
"""Shorter open-loop horizons reported next to ``--horizon``."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", type=Path, help="rosbag2 directory, .mcap or .db3 file, or a ROS 1 .bag")
    p.add_argument("--model", default="dynamic", help="model to evaluate: kinematic | dynamic | semiparametric | FILE")
    p.add_argument("--reference-model", default="dynamic", help="model reported next to it (default: nominal dynamic)")
    p.add_argument("--controller", default=None, help="controller to replay (default: the run's, else pure_pursuit)")
    p.add_argument("--config", type=Path, default=None, help="controller YAML (controller_node: ros__parameters:)")
    p.add_argument("--track", default=None, help="track NAME or CSV (default: from the run folder's summary.json)")
    p.add_argument("--vehicle", type=Path, default=None, help="vehicle parameter YAML (default models/f1tenth.yaml)")
    p.add_argument("--rate", type=cli_number(1.0, 1000.0), default=50.0, help="control rate / model grid [Hz]")
    p.add_argument("--horizon", type=cli_number(positive=True, high=60.0), default=1.0, help="open-loop prediction horizon [s]")
    p.add_argument("--stride", type=cli_number(1, 10**6, integer=True), default=5, help="a prediction window starts every this many grid steps")
    p.add_argument("--max-time", type=cli_number(positive=True, high=1e6), default=None, help="replay only the first this many seconds")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/replay-<timestamp>)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--columns", type=Path, default=None,
                   help="column-map YAML: BAG is a CSV recording; prints ../shared/realdata/metric.py's scores")
    p.add_argument("--json", action="store_true", help="with --columns: print the scores as JSON (metric.py --json layout)")
    add_bag_arguments(p)


def main(args: argparse.Namespace) -> int:
    if getattr(args, "columns", None) is not None:  # CSV telemetry of a real car: the metric.py scores
        from mbrl_control.apps.real_data import replay_main

        return replay_main(args)
    if args.rate <= 0 or args.horizon <= 0 or args.stride < 1:
        raise MbrlError("--rate and --horizon must be positive, --stride at least 1")
    params = load_vehicle_params(args.vehicle)
    dt_s = 1.0 / args.rate
    drive = read_drive(args.bag, config=drive_read_config(args), params=params)
    if args.max_time is not None:
        drive = clip_drive(drive, args.max_time)
    run_info = run_folder_info(args.bag)
    dataset, grid_t, states = drive_on_grid(drive, dt_s, params)
    controls = None if dataset is None else dataset.controls
    report: dict = {"bag": str(args.bag), "odom_topic": drive.odom_topic, "cmd_topic": drive.cmd_topic,
                    "cmd_type": drive.cmd_type, "duration_s": round(drive.duration_s, 3), "grid_steps": len(grid_t),
                    "rate_hz": args.rate, "warnings": drive.warnings, "truncated": drive.truncated}
    series: dict = {"t_s": grid_t, "states": states, "controls": controls}
    if dataset is None:
        report["model"] = None
        report["model_note"] = "the bag has no commands: model error unavailable"
    else:
        report["model"], series["model"] = model_report(args.model, params, dataset, args.horizon, args.stride)
        if args.reference_model != args.model:
            report["reference_model"], series["reference"] = model_report(args.reference_model, params, dataset,
                                                                          args.horizon, args.stride)
    track_spec = args.track or run_info.get("track")
    if track_spec is None:
        report["controller"] = None
        report["controller_note"] = "no track (give --track): controller replay skipped"
    else:
        name = args.controller or run_info.get("controller") or "pure_pursuit"
        report["controller"], series["replay"] = controller_report(name, args, params, dt_s, track_spec, drive, states,
                                                                  controls)
    out = args.out or Path("runs") / time.strftime("replay-%Y%m%d-%H%M%S")
    ensure_writable_dir(out, "output folder")
    atomic_write_json(out / "replay.json", report)
    plot_replay(out / "replay.png", report, series, dt_s)
    print(json.dumps(report, indent=2))
    print(f"replay folder: {out}", flush=True)
    return 0


def clip_drive(drive: RecordedDrive, max_time_s: float) -> RecordedDrive:
    """The first ``max_time_s`` seconds of a recording."""
    if max_time_s <= 0:
        raise MbrlError("--max-time must be positive")
    out = copy.copy(drive)
    keep_o, keep_c = drive.odom_t_s <= max_time_s, drive.cmd_t_s <= max_time_s
    out.odom_t_s, out.odom = drive.odom_t_s[keep_o], drive.odom[keep_o]
    out.cmd_t_s, out.cmd, out.cmd_speed_mps = drive.cmd_t_s[keep_c], drive.cmd[keep_c], drive.cmd_speed_mps[keep_c]
    return out


def run_folder_info(bag: Path) -> dict:
    """``track`` and ``controller`` of the ``sim`` run folder holding the bag, if any."""
    for folder in (bag.parent, bag) if bag.is_file() else (bag, bag.parent):
        summary = folder / "summary.json"
        if summary.is_file():
            try:
                data = json.loads(summary.read_text())
            except (OSError, ValueError):
                return {}
            return {k: data[k] for k in ("track", "controller") if isinstance(data.get(k), str)}
    return {}


def drive_on_grid(drive: RecordedDrive, dt_s: float, params: VehicleParams):
    """(sysid Dataset or None without commands, grid times, grid states) of the recording.

    With commands: :func:`~mbrl_control.sysid.dataset.from_drive` (steering estimated from the
    commands). Without: odometry interpolated onto the grid, steering unknown (0).
    """
    from mbrl_control.sysid.dataset import from_drive, odometry_states

    if drive.has_commands:
        data = from_drive(drive, dt_s, params)
        return data, data.t_s, data.states
    if len(drive.odom_t_s) < 2:
        raise MbrlError("recording has fewer than 2 odometry messages")
    grid = np.arange(drive.odom_t_s[0], drive.odom_t_s[-1] + 1e-9, dt_s)
    rows = np.stack([np.interp(grid, drive.odom_t_s, drive.odom[:, j]) for j in range(drive.odom.shape[1])], axis=1)
    return None, grid - grid[0], odometry_states(rows, np.zeros(len(grid)))


def model_report(spec: str, params: VehicleParams, dataset, horizon_s: float,
                 stride: int) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """Open-loop position errors of a model along the drive (windows over valid transitions only)."""
    from mbrl_control.models.factory import make_model
    from mbrl_control.models.metrics import open_loop_errors

    dt_s = dataset.dt_s
    states, controls = dataset.states, dataset.controls
    model = make_model(spec, params, dt_s, dtype=torch.float64)
    steps = max(1, int(round(horizon_s / dt_s)))
    starts = dataset.window_starts(steps, stride)
    if len(starts) == 0:
        return {"spec": spec, "rmse_m": None, "note": "recording shorter than one valid window"}, (np.zeros(0), np.zeros(0))
    _, err = open_loop_errors(model, states, controls, steps, starts=starts)
    shorter = {}
    for h in SHORT_HORIZONS_S:
        k = int(round(h / dt_s))
        if 1 <= k < steps:
            _, e = open_loop_errors(model, states, controls, k, starts=starts)
            shorter[f"{h:g}"] = _rms(e)
    return ({"spec": spec, "horizon_s": steps * dt_s, "windows": int(len(starts)), "rmse_m": _rms(err),
             "max_m": float(np.max(err)), "median_m": float(np.median(err)), "rmse_at_s": shorter},
            (starts * dt_s, err))


def _rms(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(err)))) if len(err) else float("nan")


def controller_report(name: str, args: argparse.Namespace, params: VehicleParams, dt_s: float, track_spec: str,
                      drive: RecordedDrive, states: np.ndarray, controls: np.ndarray | None) -> tuple[dict, dict]:
    """Step the controller on every recorded grid state; its commands and step times vs the recording."""
    from mbrl_control.control.factory import make_controller
    from mbrl_control.models.factory import make_model
    from mbrl_control.apps.sim import controller_options
    from mbrl_control.track import resolve_track

    track = resolve_track(track_spec)
    options, _ = controller_options(args.config, name)
    controller = make_controller(name, params, dt_s, track, make_model(args.model, params, dt_s), options.get(name, {}))
    commands, step_ms = replay_controller(controller, states, params, dt_s, quiet=args.quiet)
    report = {"name": name, "track": track.name, "steps": len(states), **_stats_ms("step_ms", step_ms),
              "deadline_misses": int(np.sum(step_ms > 1e3 * dt_s)), "control_period_ms": 1e3 * dt_s}
    if len(drive.cmd_t_s) > 1:
        report.update(_stats_ms("recorded_period_ms", 1e3 * np.diff(drive.cmd_t_s)))
    if controls is not None:
        diff = commands - controls
        report["steer_rmse_rad"] = float(np.sqrt(np.mean(diff[:, U.STEER_CMD] ** 2)))
        report["accel_rmse_mps2"] = float(np.sqrt(np.mean(diff[:, U.ACCEL] ** 2)))
        report["steer_max_abs_diff_rad"] = float(np.max(np.abs(diff[:, U.STEER_CMD])))
    return report, {"commands": commands, "step_ms": step_ms}


def replay_controller(controller, states: np.ndarray, params: VehicleParams, dt_s: float,
                      quiet: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Guarded commands (N, 2) and wall-clock step times [ms] of ``controller`` on ``states`` in order."""
    from mbrl_control.control.base import guard_command

    commands = np.zeros((len(states), CONTROL_DIM))
    step_ms = np.zeros(len(states))
    controller.reset(states[0])
    report_every = max(1, len(states) // 10)
    for k, state in enumerate(states):
        tic = time.perf_counter()
        try:
            raw = controller.step(state)
        except Exception as exc:  # noqa: BLE001 - a controller fault is reported as a safe stop, as in the loop
            print(f"[replay] controller raised {type(exc).__name__} at step {k}: {exc}", file=sys.stderr)
            raw = np.full(CONTROL_DIM, np.nan)
        commands[k], _ = guard_command(raw, state, params, dt_s)
        step_ms[k] = 1e3 * (time.perf_counter() - tic)
        if not quiet and k % report_every == 0:
            print(f"[replay] controller {100 * k / len(states):5.1f} %", file=sys.stderr, flush=True)
    return commands, step_ms


def _stats_ms(prefix: str, values: np.ndarray) -> dict:
    if len(values) == 0:
        return {}
    return {prefix: {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)),
                     "max": float(np.max(values))}}


def _break_at_gaps(t: np.ndarray, y: np.ndarray, max_step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Insert NaN where consecutive samples are further apart than ``max_step_s`` (no line across gaps)."""
    cut = np.flatnonzero(np.diff(t) > max_step_s) + 1
    return np.insert(t.astype(float), cut, np.nan), np.insert(y.astype(float), cut, np.nan)


def plot_replay(path: Path, report: dict, series: dict, dt_s: float) -> None:
    """Path coloured by the model's error, error over time, commands recorded vs replayed, step times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(13, 12))
    t, states = series["t_s"], series["states"]
    ax = axes[0, 0]
    if "model" in series and len(series["model"][0]):
        idx = np.round(series["model"][0] / dt_s).astype(int)
        ax.plot(states[:, S.X], states[:, S.Y], color="0.7", lw=0.8)
        sc = ax.scatter(states[idx, S.X], states[idx, S.Y], c=series["model"][1], s=5, cmap="magma")
        fig.colorbar(sc, ax=ax, label=f"{report['model']['horizon_s']:.2f} s position error [m]")
    else:
        ax.plot(states[:, S.X], states[:, S.Y], lw=0.8)
    ax.set_aspect("equal")
    ax.set_title("recorded path")
    ax = axes[0, 1]
    for key, label in (("model", report.get("model")), ("reference", report.get("reference_model"))):
        if key in series and len(series[key][0]):
            t_err, err = _break_at_gaps(*series[key], max_step_s=2.0 * dt_s * max(1, int(np.median(np.diff(series[key][0])) / dt_s + 0.5)))
            ax.plot(t_err, err, lw=0.9, label=f"{label['spec']} (RMSE {label['rmse_m']:.3f} m)")
    ax.set_xlabel("t [s]")
    ax.set_ylabel("open-loop position error [m]")
    ax.set_title("model error along the drive")
    if ax.lines:
        ax.legend()
    replay = series.get("replay")
    for ax, j, label in ((axes[1, 0], U.STEER_CMD, "steering command [rad]"), (axes[1, 1], U.ACCEL, "acceleration command [m/s²]")):
        if series["controls"] is not None:
            ax.plot(t, series["controls"][:, j], lw=0.9, label="recorded")
        if replay is not None:
            ax.plot(t, replay["commands"][:, j], lw=0.9, ls="--", label=f"{report['controller']['name']} replayed")
        ax.set_xlabel("t [s]")
        ax.set_ylabel(label)
        if ax.lines:
            ax.legend()
    ax = axes[2, 0]
    if replay is not None:
        ax.hist(replay["step_ms"], bins=50, alpha=0.7, label="controller step time")
    ax.axvline(1e3 * dt_s, color="red", ls=":", label="control period")
    ax.set_xlabel("[ms]")
    ax.set_title("step times")
    ax.legend()
    ax = axes[2, 1]
    ax.plot(t, states[:, S.V], lw=0.9)
    ax.set_xlabel("t [s]")
    ax.set_ylabel("speed [m/s]")
    ax.set_title("recorded speed")
    fig.tight_layout()
    from mbrl_control.sim.plot import save_figure_atomically

    save_figure_atomically(fig, path, dpi=90)
