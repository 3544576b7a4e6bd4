"""``mbrl-control demo``: the ROS 2 node graph in real time, in one process, then the run folder.

Component style: sim_node, controller_node and sysid_node (plus a telemetry recorder and a run
monitor) are built in this process and spun by one :class:`~mbrl_control.ros.runtime.Spinner`
(a MultiThreadedExecutor); they talk over real DDS topics exactly as separate processes would.
Node parameters come from ``config/demo.yaml`` (``--config``); the flags override a few of them.
At the end the run folder of DESIGN.md is written: ``telemetry.mcap`` (recorded from the
topics), ``summary.json`` (the fields of ``mbrl-control sim``, computed from what the nodes did)
and ``plot.png``, plus ``models/`` with the versioned models sysid_node announced.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mbrl_control import MbrlError, share_dir

DEFAULT_CONFIG = "demo.yaml"
DEFAULT_NICE = -10


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mbrl_control.config import cli_number
    from mbrl_control.control.factory import CONTROLLERS
    from mbrl_control.sim import PLANTS

    p.add_argument("--track", default="default", help="track NAME or centerline CSV (default: the embedded track)")
    p.add_argument("--laps", type=int, default=2)  # range checked in run_demo (its message is documented)
    p.add_argument("--controller", default=None, choices=list(CONTROLLERS), help="default: the one in --config")
    p.add_argument("--plant", default="dynamic", choices=PLANTS)
    p.add_argument("--actuation", default="acceleration", choices=("acceleration", "speed", "miscalibrated"),
                   help="the simulated driver; speed: follows drive.speed like an F1TENTH car, and the controller is "
                        "told the speed interface (its gains and dead time identified online); miscalibrated: "
                        "steering map, steering dead time and throttle dead zone not as nominal (controller and sysid "
                        "identify them online)")
    p.add_argument("--seed", type=cli_number(0, 2**32 - 1, integer=True), default=0)
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<timestamp>)")
    p.add_argument("--config", type=Path, default=None, help="node parameters (ros__parameters YAML; default config/demo.yaml)")
    p.add_argument("--no-sysid", action="store_true", help="run without online system identification")
    p.add_argument("--max-time", type=cli_number(positive=True, high=1e6), default=None, help="give up after this much simulated time [s]")
    p.add_argument("--domain-id", type=int, default=None, help="ROS domain id (default: ROS_DOMAIN_ID or 0)")
    p.add_argument("--nice", type=cli_number(-20, 19, integer=True), default=DEFAULT_NICE,
                   help=f"scheduling niceness to ask for (default {DEFAULT_NICE}; ignored without the privilege)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


@dataclass(frozen=True)
class DemoOptions:
    track: str = "default"
    laps: int = 2
    controller: str | None = None
    plant: str = "dynamic"
    actuation: str = "acceleration"
    seed: int = 0
    out: Path | None = None
    config: Path | None = None
    sysid: bool = True
    max_time_s: float | None = None
    domain_id: int | None = None
    nice: int = DEFAULT_NICE
    quiet: bool = False


def main(args: argparse.Namespace) -> int:
    options = DemoOptions(track=args.track, laps=args.laps, controller=args.controller, plant=args.plant,
                          actuation=args.actuation, seed=args.seed,
                          out=args.out, config=args.config, sysid=not args.no_sysid, max_time_s=args.max_time,
                          domain_id=args.domain_id, nice=args.nice, quiet=args.quiet)
    try:
        summary, out = run_demo(options, signals_ignored_after=True)
    except PartialRunError as exc:  # the run is complete, some of its files are not: show what was computed
        print(json.dumps(exc.summary, indent=2), flush=True)
        raise
    print(json.dumps(summary, indent=2))
    print(f"run folder: {out}", flush=True)
    return 0 if summary["laps_completed"] >= options.laps else 1


class PartialRunError(MbrlError):
    """Files of a finished run could not be written; ``summary`` holds what was computed."""

    def __init__(self, message: str, summary: dict) -> None:
        super().__init__(message)
        self.summary = summary


def _check(options: DemoOptions) -> Path:
    """Validate the flags before anything starts; the params file (or the default one)."""
    from mbrl_control.ros.env import check_domain_id
    from mbrl_control.track import resolve_track

    if options.laps < 1:
        raise MbrlError("--laps must be at least 1")
    if options.max_time_s is not None and options.max_time_s <= 0:
        raise MbrlError("--max-time must be positive")
    if options.domain_id is not None:
        check_domain_id(options.domain_id)
    config = options.config or share_dir() / "config" / DEFAULT_CONFIG
    if not Path(config).is_file():
        raise MbrlError(f"config file not found: {config}")
    resolve_track(options.track)
    return Path(config)


def run_demo(options: DemoOptions, signals_ignored_after: bool = False) -> tuple[dict, Path]:
    """Build the node graph, drive until done, write the run folder; (summary, run folder).

    ``signals_ignored_after``: a program about to print its summary and exit keeps ignoring SIGINT /
    SIGTERM after the run folder is written (a Ctrl-C then would kill the interpreter as it exits).
    """
    config = _check(options)
    from mbrl_control.config import ensure_writable_dir
    from mbrl_control.ros.env import ensure_ros_env, raise_priority

    out = options.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    ensure_writable_dir(out, "run folder")  # before anything starts

    ensure_ros_env(options.domain_id)
    priority = raise_priority(options.nice)
    logging.basicConfig(level=logging.WARNING if options.quiet else logging.INFO, format="[%(name)s] %(message)s",
                        stream=sys.stderr)  # the sysid decisions (refit started, accepted / rejected and why)
    from mbrl_control.ros.runtime import ShutdownRequest, Spinner, init_context

    context = init_context(args=[], domain_id=options.domain_id)
    spinner = Spinner(context)
    request = ShutdownRequest(notice="[demo] still writing the run folder; it finishes by itself in a few seconds")
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # the first Ctrl-C or SIGTERM ends the drive; later ones must not lose the run
        request.install()
    try:
        try:
            graph = _build_graph(context, spinner, options, config, out)
            _drive(spinner, graph, options.quiet)
        except BaseException:
            request.interruptible = False
            spinner.stop()
            raise
        request.interruptible = False  # the drive is over: from here on a signal only prints the notice
        try:
            result = _collect(graph)
        finally:
            spinner.stop()
        return _write_run(out, graph, result, options, {"process_nice": priority}), out
    finally:
        if in_main_thread:
            request.uninstall(ignore_after=signals_ignored_after)


@dataclass
class Graph:
    sim: object
    controller: object
    sysid: object | None
    monitor: object
    recorder: object


def _build_graph(context, spinner, options: DemoOptions, config: Path, out: Path) -> Graph:
    from rclpy.parameter import Parameter

    from mbrl_control.ros.controller_node import ControllerNode
    from mbrl_control.ros.monitor import MonitorRules, RunMonitor
    from mbrl_control.ros.sim_node import SimNode
    from mbrl_control.track import resolve_track

    args = ["--ros-args", "--params-file", str(config)]
    track = resolve_track(options.track)
    sim = spinner.add(SimNode(context=context, cli_args=args, parameter_overrides=[
        Parameter("track", value=options.track), Parameter("plant", value=options.plant), Parameter("seed", value=options.seed),
        Parameter("actuation", value=options.actuation)]))
    rules = MonitorRules(laps=options.laps, max_time_s=options.max_time_s or _default_max_time(track, options.laps))
    capacity = int(2.0 * rules.max_time_s * _configured_rate_hz(config)) + 1000  # 2x: the sim may run slower than real time
    overrides = [Parameter("track", value=options.track), Parameter("step_log_capacity", value=capacity)]
    if options.controller:
        overrides.append(Parameter("controller", value=options.controller))
    if options.actuation == "speed":
        overrides += [Parameter("command_interface", value="speed"), Parameter("steering_actuator", value="rate_limit")]
    calibration = [Parameter("actuator_calibration", value="identify")] if options.actuation == "miscalibrated" else []
    overrides += calibration
    if options.sysid:  # announced models are accepted only from this run's sysid folder (and its key)
        overrides.append(Parameter("model_dir", value=str(out / "models")))
    controller = spinner.add(ControllerNode(context=context, cli_args=args, parameter_overrides=overrides))
    sysid = None
    if options.sysid:
        from mbrl_control.ros.sysid_node import SysidNode

        sysid = spinner.add(SysidNode(context=context, cli_args=args, parameter_overrides=[
            Parameter("out_dir", value=str(out / "models")), Parameter("model", value=controller.model_spec),
            Parameter("rate_hz", value=controller.cfg["rate_hz"]), Parameter("sysid.seed", value=options.seed),
            *calibration]))
    monitor = spinner.add(RunMonitor(track, rules, context=context))
    recorder = spinner.add(_make_recorder(context, controller))
    return Graph(sim=sim, controller=controller, sysid=sysid, monitor=monitor, recorder=recorder)


def _configured_rate_hz(config: Path) -> float:
    """controller_node's rate_hz in the params file (the node validates it; 50 Hz when absent)."""
    from mbrl_control.config import load_yaml

    params = load_yaml(config).get("controller_node", {}).get("ros__parameters", {})
    rate = params.get("rate_hz", 50.0) if isinstance(params, dict) else 50.0
    return float(rate) if isinstance(rate, (int, float)) and rate > 0 else 50.0


def _default_max_time(track, laps: int) -> float:
    expected = track.reference_lap_time_s or track.length_m / 3.0
    return laps * expected * 3.0 + 20.0


def _make_recorder(context, controller):
    from ackermann_msgs.msg import AckermannDriveStamped
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TwistStamped
    from nav_msgs.msg import Odometry, Path as PathMsg
    from std_msgs.msg import String

    from mbrl_control.ros import qos
    from mbrl_control.ros.recorder import TelemetryRecorder, TopicSpec

    command = (TopicSpec("/drive", AckermannDriveStamped, qos.COMMAND) if controller.cfg["command_type"] == "ackermann"
               else TopicSpec("/cmd_vel", TwistStamped, qos.COMMAND))
    topics = [TopicSpec("/odom", Odometry, qos.ODOMETRY), command,
              TopicSpec(f"{controller.get_fully_qualified_name()}/optimal_path", PathMsg, qos.VISUALIZATION),
              TopicSpec("/model_updates", String, qos.MODEL_UPDATES), TopicSpec("/diagnostics", DiagnosticArray, qos.DIAGNOSTICS)]
    return TelemetryRecorder(topics, context=context)


def _drive(spinner, graph: Graph, quiet: bool) -> None:
    """Spin until the monitor says the run is over; a progress line per second."""
    spinner.start()
    say = (lambda text: None) if quiet else (lambda text: print(f"[demo] {text}", file=sys.stderr, flush=True))
    say(f"{graph.controller.cfg['controller']} on '{graph.controller.track.name}', {graph.sim.plant.name} plant, "
        f"{graph.monitor.rules.laps} laps; sysid {'on' if graph.sysid else 'off'}")
    try:
        while not graph.monitor.done.wait(timeout=1.0):
            say(graph.monitor.progress_line())
    except KeyboardInterrupt:
        graph.monitor.failure = "interrupted"
        say("interrupted: writing the run folder")
    say(graph.monitor.progress_line())


@dataclass
class Collected:
    steps: dict
    models_used: list
    model_swaps: int
    announced: int
    telemetry: list
    wall_s: float


def _collect(graph: Graph) -> Collected:
    """Everything needed after the nodes are gone (taken while the executor still runs)."""
    stats = graph.controller.stats
    n = stats.log_count
    steps = {name: np.array(getattr(stats, f"log_{name}")[:n]) for name in
             ("t_s", "publish_s", "state", "control", "step_ms", "late_ms", "model_version", "stale")}
    telemetry = graph.recorder.take()
    publish = steps["publish_s"]
    return Collected(steps=steps, models_used=list(graph.controller.models_used), model_swaps=graph.controller.model_swaps,
                     announced=graph.sysid.version if graph.sysid else 0,
                     telemetry=telemetry, wall_s=float(publish[-1] - publish[0]) if n > 1 else 0.0)


def _write_run(out: Path, graph: Graph, result: Collected, options: DemoOptions, extra: dict) -> dict:
    """telemetry.mcap, summary.json, plot.png, each written atomically; a failed write (a full disk) does not
    stop the others and ends in :class:`PartialRunError` carrying the summary."""
    from mbrl_control.config import atomic_write_json
    from mbrl_control.ros.recorder import write_mcap
    from mbrl_control.sim.runner import write_failure_message

    failures: list[tuple[str, str]] = []
    try:
        write_mcap(out / "telemetry.mcap", graph.recorder.topics, result.telemetry)
    except OSError as exc:
        failures.append((str(out / "telemetry.mcap"), exc.strerror or str(exc)))
    summary, log, loop = _summarize(graph, result, options)
    summary.update(extra)
    try:
        atomic_write_json(out / "summary.json", summary)
    except OSError as exc:
        failures.append((str(out / "summary.json"), exc.strerror or str(exc)))
    from mbrl_control.sim.plot import plot_run

    try:
        plot_run(out / "plot.png", graph.monitor.track, log, loop.model_error_series(log), summary, 1e3 * loop.dt_s)
    except OSError as exc:
        failures.append((str(out / "plot.png"), exc.strerror or str(exc)))
    if failures:
        raise PartialRunError(write_failure_message(failures, "the summary is printed on stdout"), summary)
    return summary


def _summarize(graph: Graph, result: Collected, options: DemoOptions):
    """The summary of ``mbrl-control sim`` (ClosedLoop's own), from the controller's per-step log."""
    from mbrl_control.ros.loopstats import achieved_rate_hz
    from mbrl_control.sim.runner import ClosedLoop, RunConfig

    controller, monitor = graph.controller, graph.monitor
    log = _run_log(result.steps, monitor.track)
    loop = ClosedLoop(monitor.track, graph.sim.plant, controller.controller,
                      RunConfig(laps=options.laps, control_rate_hz=controller.cfg["rate_hz"], seed=options.seed, progress=False),
                      interface=controller.command_interface, actuator_identifier=controller.actuator_identifier)
    loop.models = [(t, model) for t, _, model in result.models_used]
    loop.model_name = controller.model_spec
    failed = monitor.failure is not None or monitor.laps_done < options.laps
    summary = loop.summarize(log, monitor.laps_done, list(monitor.lap_times_s), failed)
    start = len(result.steps["stale"]) - len(log.t_s)  # the steps before the first odometry are not part of the run
    late = result.steps["late_ms"][start:] if len(log.t_s) else np.zeros(1)
    summary.update({
        "control_rate_hz": round(achieved_rate_hz(result.steps["publish_s"]), 3),
        "control_rate_target_hz": controller.cfg["rate_hz"],
        "late_commands": int(np.sum(log.latency_ms + late[:len(log.latency_ms)] > 1e3 * loop.dt_s)),
        "tick_delay_ms": {"p50": float(np.percentile(late, 50)), "p99": float(np.percentile(late, 99)), "max": float(late.max())},
        "model_swaps": result.model_swaps,
        # safe stops for stale odometry after the first odometry, and the stops the node's own lateness would have
        # caused under the rule before issue 14 (docs/ros_interface.md, Stale odometry)
        "stale_steps": int(np.sum(result.steps["stale"][start:])),
        "stale_avoided": {"tick_late": int(getattr(controller, "stale_avoided_tick_late", 0)),
                          "queued": int(getattr(controller, "stale_avoided_queued", 0))},
        "model_swap_step_ms": _swap_step_ms(log),
        "models_announced": result.announced,
        "stopped_because": monitor.failure,
        "realtime": True,
        "wall_time_s": round(result.wall_s, 3),
    })
    return summary, log, loop


def _swap_step_ms(log) -> list[float]:
    """Step time of each tick that swapped a model in (the swap is part of that tick's step)."""
    if len(log.model_version) < 2:
        return []
    ticks = np.flatnonzero(np.diff(log.model_version) != 0) + 1
    return [round(float(log.latency_ms[k]), 3) for k in ticks]


def _run_log(steps: dict, track):
    """A :class:`RunLog` of the control steps from the first one with fresh odometry on."""
    from mbrl_control.models.layout import S
    from mbrl_control.sim.runner import RunLog

    fresh = np.flatnonzero(~steps["stale"])
    start = int(fresh[0]) if len(fresh) else len(steps["stale"])
    state = steps["state"][start:]
    log = RunLog()
    if len(state):
        proj = track.project(state[:, [S.X, S.Y]])
        right, left = track.widths_at(proj.progress_m)
        log.progress_m, log.lateral_m = list(proj.progress_m), list(proj.lateral_m)
        log.inside = list((proj.lateral_m >= -right) & (proj.lateral_m <= left))
    log.t_s = list(steps["t_s"][start:] - (steps["t_s"][start] if len(state) else 0.0))
    log.state, log.measured, log.control = list(state), list(state), list(steps["control"][start:])
    log.latency_ms, log.model_version = list(steps["step_ms"][start:]), list(steps["model_version"][start:])
    log.finish()
    return log
