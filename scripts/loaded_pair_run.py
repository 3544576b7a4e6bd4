"""controller_node against sim_node, two processes over real DDS, driven for N laps; prints a JSON summary.

The "under load" measurement of docs/benchmarks.md runs it beside ``scripts/stress_cpu.py``:

    python scripts/stress_cpu.py --seconds 150 &
    python scripts/loaded_pair_run.py --laps 2 --odom-timeout 0.1

controller_node starts first (its warm-up compiles before the car exists) with the controller section of
``--config`` (default config/demo.yaml: MPPI, 128 samples, 50 steps) but the dynamic model, no model
updates, and ``odom_timeout_s`` from ``--odom-timeout``; sim_node starts once the controller is up. This
process watches: laps and leaving the track (the demo's run monitor, on odometry), the gaps between
odometry messages (by their stamps: the sender's side; by receipt here), and controller_node's
/diagnostics. Both nodes run at the niceness of this process (normal priority unless started with
``nice``; ``--controller-niceness -10``: controller_node's ``process_niceness``, as config/car.yaml), on the wall clock (``--sim-time``: the controller follows sim_node's /clock instead).

Summary fields: ``laps``, ``lap_times_s``, ``stopped_because``, ``stale_steps`` (every safe-stop tick,
those before the first odometry included), ``stale_input_steps`` (safe stops after odometry came: the
issue-14 figure, 0 while odometry arrives), ``stale_avoided_tick_late`` / ``stale_avoided_queued`` (ticks
the rule before issue 14 would have stopped), ``step_p99_ms_worst_window`` (largest p99 of the
controller's 5 s windows), ``off_track_samples`` (odometry outside the track bounds: collisions),
``odom_gap_max_ms_sender`` (between the sender's writes, DDS source timestamps) / ``_received`` (here),
and each stop episode controller_node logged, by cause: ``stop_episodes_input`` (the sender had written
nothing for ``--odom-timeout`` at that moment) or ``stop_episodes_spurious`` (odometry was arriving).
Exit code 0 when all laps were driven.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mbrl_control.ros.env import ensure_ros_env  # noqa: E402

STATUS = "controller_node: control loop"
READY = re.compile(r"\bat [0-9.]+ Hz, model\b")  # controller_node's line once it is built and warmed up


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--laps", type=int, default=2)
    p.add_argument("--odom-timeout", type=float, default=0.1, help="controller_node's odom_timeout_s [s]")
    p.add_argument("--config", default=str(ROOT / "config" / "demo.yaml"))
    p.add_argument("--controller", default=None, help="controller (default: the config's)")
    p.add_argument("--model", default="dynamic", help="controller_node's model (default dynamic: no sysid here)")
    p.add_argument("--track", default="default")
    p.add_argument("--sim-time", action="store_true", help="controller_node on sim_node's /clock")
    p.add_argument("--actuation", choices=("acceleration", "speed"), default="acceleration",
                   help="sim_node's driver; speed: the F1TENTH speed-following driver, and controller_node told "
                        "the speed interface with a rate-limited steering servo (terms identified online)")
    p.add_argument("--controller-niceness", type=int, default=0,
                   help="controller_node's process_niceness (0: this process's; -10 as config/car.yaml)")
    p.add_argument("--max-time", type=float, default=None, help="sim-time limit [s] (default: as the demo)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS domain (default: 200 + pid %% 30)")
    p.add_argument("--logs", default=None, help="folder for the nodes' stderr (default: a temporary one)")
    p.add_argument("--out", default=None, help="also write the summary to this JSON file")
    return p.parse_args(argv)


class Child:
    """A node program; its stderr goes to a file, and ``ready`` is set when a line matches ``pattern``."""

    def __init__(self, command: list[str], log: Path, pattern: re.Pattern | None = None) -> None:
        self.ready = threading.Event()
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self._thread = threading.Thread(target=self._pump, args=(log, pattern), daemon=True)
        self._thread.start()

    def _pump(self, log: Path, pattern: re.Pattern | None) -> None:
        with open(log, "w") as out:
            for line in self.proc.stderr:
                out.write(line)
                out.flush()
                if pattern is not None and pattern.search(line):
                    self.ready.set()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(10.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5.0)


LOG_LINE = re.compile(r"^\[(\w+)\] \[([0-9.]+)\] \[controller_node\]: (.*)$")


def _stops_by_cause(log: Path, published, timeout_s: float, end_s: float) -> dict:
    """Each safe stop controller_node logged for stale odometry while the run went on (before ``end_s``, system
    clock), by cause: the sender had been silent for a timeout at that moment (``input``), or not (``spurious``:
    odometry was arriving); ``after_end``: logged once the run was over (e.g. a plant gone off the track)."""
    stops = {"input": 0, "spurious": 0, "after_end": 0}
    silences = []
    for line in log.read_text().splitlines():
        match = LOG_LINE.match(line)
        if not match or not match.group(3).startswith("stale odometry:"):
            continue
        t = float(match.group(2))
        if t > end_s:
            stops["after_end"] += 1
            continue
        before = published[published <= t]
        silence = t - before[-1] if len(before) else math.inf
        silences.append(round(1e3 * silence, 1))
        stops["input" if silence > timeout_s else "spurious"] += 1
    return {"stop_episodes_input": stops["input"], "stop_episodes_spurious": stops["spurious"],
            "stop_episodes_after_end": stops["after_end"], "stop_episode_sender_silence_ms": silences}


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    domain = args.domain_id if args.domain_id is not None else 200 + os.getpid() % 30
    ensure_ros_env(domain)  # the children inherit ROS_DOMAIN_ID and the middleware settings
    import tempfile

    import numpy as np
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    from mbrl_control.apps.demo import _default_max_time
    from mbrl_control.ros import conversions as conv
    from mbrl_control.ros import qos
    from mbrl_control.ros.monitor import MonitorRules, RunMonitor
    from mbrl_control.ros.runtime import Spinner, init_context
    from mbrl_control.track import resolve_track

    track = resolve_track(args.track)
    rules = MonitorRules(laps=args.laps, max_time_s=args.max_time or _default_max_time(track, args.laps))
    logs = Path(args.logs or tempfile.mkdtemp(prefix="loaded_pair_run_"))
    logs.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent

    class Listener(Node):
        def __init__(self, context) -> None:
            super().__init__("pair_run_listener", context=context)
            self.stamps: list[float] = []
            self.received: list[float] = []
            self.published: list[float] = []
            self.off_track = 0
            self.diagnostics: list[dict] = []
            deep = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE)
            self.create_subscription(Odometry, "odom", self._on_odom, deep)  # deep: no message lost while this waits
            self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, qos.DIAGNOSTICS)

        def _on_odom(self, msg, info) -> None:
            self.received.append(time.monotonic())
            self.published.append(info["source_timestamp"] * 1e-9)  # the sender's write time (system clock)
            self.stamps.append(conv.stamp_to_s(msg.header.stamp))
            x, y = msg.pose.pose.position.x, msg.pose.pose.position.y
            proj = track.project(np.array([x, y]))
            right, left = track.widths_at(proj.progress_m)
            self.off_track += int(not -right <= float(proj.lateral_m) <= left)

        def _on_diag(self, msg) -> None:
            for status in msg.status:
                if status.name == STATUS:
                    self.diagnostics.append({kv.key: kv.value for kv in status.values})

    common = ["--ros-args", "--params-file", args.config]
    ctl = common + ["-p", f"odom_timeout_s:={args.odom_timeout}", "-p", "accept_models:=false", "-p",
                    f"model:={args.model}", "-p", f"track:={args.track}", "-p", "diagnostics_period_s:=0.5"]
    if args.controller:
        ctl += ["-p", f"controller:={args.controller}"]
    if args.controller_niceness:
        ctl += ["-p", f"process_niceness:={args.controller_niceness}"]
    if args.sim_time:
        ctl += ["-p", "use_sim_time:=true"]
    if args.actuation == "speed":
        ctl += ["-p", "command_interface:=speed", "-p", "steering_actuator:=rate_limit"]
    context = init_context(args=[], domain_id=domain)
    listener = Listener(context)
    monitor = RunMonitor(track, rules, context=context, node_name="pair_run_monitor")
    spinner = Spinner(context, [listener, monitor]).start()
    children: list[Child] = []
    summary: dict = {"domain_id": domain, "odom_timeout_s": args.odom_timeout, "sim_time": args.sim_time,
                     "nice": os.nice(0),
                     "controller_niceness": args.controller_niceness, "logs": str(logs)}
    try:
        controller = Child([str(bindir / "controller_node"), *ctl], logs / "controller_node.err", READY)
        children.append(controller)
        if not controller.ready.wait(300.0):
            raise SystemExit(f"controller_node did not come up; see {logs / 'controller_node.err'}")
        sim = Child([str(bindir / "sim_node"), *common, "-p", f"track:={args.track}", "-p",
                     f"actuation:={args.actuation}"], logs / "sim_node.err")
        children.append(sim)
        t0 = time.monotonic()
        while not monitor.done.wait(1.0):
            if time.monotonic() - t0 > 3.0 * rules.max_time_s + 60.0 or any(c.proc.poll() is not None for c in children):
                monitor.failure = monitor.failure or "a node exited or the run took too long"
                break
        end_s = time.time()  # the run is over: laps done, off the track, stopped or out of time
        count = len(listener.diagnostics)
        deadline = time.monotonic() + 3.0  # one more /diagnostics after the last lap: the counters of the whole drive
        while len(listener.diagnostics) <= count and time.monotonic() < deadline:
            time.sleep(0.05)
        last = dict(listener.diagnostics[-1]) if listener.diagnostics else {}
        stamps, received, published = np.array(listener.stamps), np.array(listener.received), np.array(listener.published)
        p99s = [float(d["step_p99_ms"]) for d in listener.diagnostics if "step_p99_ms" in d]
        summary.update({
            "laps": monitor.laps_done, "lap_times_s": [round(t, 2) for t in monitor.lap_times_s],
            "stopped_because": monitor.failure,
            **{key: int(last[key]) for key in ("steps", "stale_steps", "stale_input_steps", "stale_avoided_tick_late",
                                               "stale_avoided_queued", "odometry_taken_in_ticks", "watchdog_stops",
                                               "deadline_misses", "late_commands", "rejected_odometry",
                                               "odometry_refused_stamps", "odometry_superseded") if key in last},
            "controller_niceness_in_effect": int(last["process_niceness"]) if "process_niceness" in last else None,
            "step_p99_ms_worst_window": max(p99s) if p99s else math.nan,
            "step_p99_ms_last_window": p99s[-1] if p99s else math.nan,
            "tick_delay_run_max_ms": float(last.get("tick_delay_run_max_ms", "nan")),
            "off_track_samples": listener.off_track,
            "odom_messages": len(stamps),
            "odom_gap_max_ms_sender": float(1e3 * np.diff(np.sort(published)).max()) if len(published) > 1 else math.nan,
            "odom_gap_max_ms_stamps": float(1e3 * np.diff(stamps).max()) if len(stamps) > 1 else math.nan,
            "odom_gaps_over_timeout_sender": int(np.sum(np.diff(np.sort(published)) > args.odom_timeout)),
            "odom_gap_max_ms_received": float(1e3 * np.diff(received).max()) if len(received) > 1 else math.nan,
        })
    finally:
        for child in children:  # the controller first: its last ticks still have odometry
            summary.setdefault("exit_codes", []).append(child.stop())
        spinner.stop()
    if "laps" in summary:
        summary.update(_stops_by_cause(logs / "controller_node.err", np.sort(published), args.odom_timeout, end_s))
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if summary.get("laps", 0) >= args.laps and not summary.get("stopped_because") else 1


if __name__ == "__main__":
    raise SystemExit(main())
