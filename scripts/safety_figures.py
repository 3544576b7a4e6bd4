#!/usr/bin/env python3
"""The measured figures of docs/safety.md: safe-stop latency, watchdog latency, an odometry flood.

Runs ``controller_node`` (the default MPPI controller at 50 Hz, ``odom_timeout_s`` 0.2) in this
process over real DDS on a domain of its own (discovery on localhost), with a listener on
``drive`` in its own executor thread, as the ROS tests do (helpers from test/test_ros_support.py):

(a) safe stop: odometry (100 Hz) stops ``--trials`` times; latency = receipt of the first
    safe-stop command (found by its stamp in the node's step log) minus the last odometry sent;
(b) watchdog: one controller step blocks for ``--block-s``; latency = receipt of the first
    command stamped after the block began (the watchdog's: the blocked tick publishes nothing);
(c) flood: odometry from a separate publisher process at 100 Hz, then at ``--flood-hz``; the
    node's step time (p50 / p99 / max) and tick lateness over ``--measure-s`` of each.

Prints a markdown table (and ``--json`` a JSON object). Usage:
    .venv/bin/python scripts/safety_figures.py [--trials 20] [--blocks 10] [--flood-hz 5000]
The publisher process is this script with ``--publish-odom HZ``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))  # the ROS test helpers (FakeOdometry, spinning, wait_until)

ODOM_TIMEOUT_S = 0.2
RATE_HZ = 50.0
NORMAL_ODOM_HZ = 100.0
MIN_SLEEP_S = 2e-4
"""The publisher process sleeps only when this far ahead of its schedule (a sleep costs ~60 us more)."""
START_POSE = (0.0, 0.0, 0.3, 3.0)  # x [m], y [m], yaw [rad], speed [m/s]: the ROS tests' start state


def domain_id() -> int:
    """A DDS domain for this run, apart from the test processes' 100..199."""
    return 200 + os.getpid() % 30


def start_state() -> np.ndarray:
    from mbrl_control.config import load_vehicle_params
    from mbrl_control.sim.plant import initial_state_at

    return initial_state_at(*START_POSE, load_vehicle_params())


# ---------------------------------------------------------------------------------- publisher process
def publish_odometry(rate_hz: float, seconds: float, domain: int) -> None:
    """Publish fresh odometry of the start state at ``rate_hz`` for ``seconds``; print what was sent."""
    from mbrl_control.ros.runtime import init_context

    context = init_context(args=[], domain_id=domain)
    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.node import Node

    from mbrl_control.ros import conversions as conv
    from mbrl_control.ros import qos

    node = Node("odom_flood", context=context)
    pub = node.create_publisher(Odometry, "odom", qos.ODOMETRY)
    msg, state = Odometry(), start_state()
    time.sleep(1.0)  # discovery
    print("publishing", flush=True)
    sent, period_s = 0, 1.0 / rate_hz
    start = next_s = time.perf_counter()
    while next_s - start < seconds:
        conv.fill_odometry(msg, state, node.get_clock().now().to_msg(), "map", "base_link")
        pub.publish(msg)
        sent += 1
        next_s += period_s
        ahead_s = next_s - time.perf_counter()
        if ahead_s > MIN_SLEEP_S:  # a shorter sleep overshoots; behind schedule: publish back to back
            time.sleep(ahead_s)
    elapsed_s = time.perf_counter() - start
    print(json.dumps({"sent": sent, "rate_hz": sent / elapsed_s}), flush=True)
    node.destroy_node()
    rclpy.shutdown(context=context)


# ---------------------------------------------------------------------------------- measuring side
class DriveListener:
    """Receipt time (monotonic) and stamp of every command on ``drive``, spun in its own executor thread."""

    def __init__(self, context) -> None:
        from ackermann_msgs.msg import AckermannDriveStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        from mbrl_control.ros import qos

        self.received: list[tuple[float, int]] = []
        self.node = Node("safety_listener", context=context)
        self.node.create_subscription(AckermannDriveStamped, "drive", self._on_drive, qos.COMMAND)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)

    def _on_drive(self, msg) -> None:
        self.received.append((time.monotonic(), int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)))

    def first_after(self, stamp_ns: int) -> tuple[float, int] | None:
        """The first command received with a stamp at or after ``stamp_ns``."""
        return next(((t, s) for t, s in list(self.received) if s >= stamp_ns), None)


def make_node(context):
    from rclpy.parameter import Parameter

    from mbrl_control.ros.controller_node import ControllerNode

    values = {"rate_hz": RATE_HZ, "odom_timeout_s": ODOM_TIMEOUT_S, "step_log_capacity": 200_000,
              "diagnostics_period_s": 0.5}
    return ControllerNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def wait_driving(node, wait_until, settle_s: float) -> None:
    """Until the node steps on fresh odometry again, then ``settle_s`` more."""
    if not wait_until(lambda: not node._stopped and node.stats.log_count > 0
                      and not node.stats.log_stale[node.stats.log_count - 1], timeout_s=30.0):
        raise RuntimeError("the controller did not resume on fresh odometry")
    time.sleep(settle_s)


def safe_stop_latencies(node, odom, listener, trials: int, wait_until) -> list[float]:
    """(a): seconds from the last odometry sent to the receipt of the first safe-stop command."""
    rng = np.random.default_rng(15)
    out = []
    for _ in range(trials):
        odom.paused = False
        wait_driving(node, wait_until, 0.5 + float(rng.uniform(0.0, 1.0 / RATE_HZ)))
        before = node.stats.log_count
        odom.paused = True
        time.sleep(0.05)  # a tick of the publisher may be under way
        last_sent_s = odom.last_sent_s
        wait_until(lambda: bool(np.any(node.stats.log_stale[before:node.stats.log_count])), timeout_s=5.0)
        n = node.stats.log_count
        first = before + int(np.argmax(node.stats.log_stale[before:n]))
        stamp_ns = int(round(node.stats.log_t_s[first] * 1e9))
        wait_until(lambda: listener.first_after(stamp_ns - 1000) is not None, timeout_s=5.0)
        out.append(listener.first_after(stamp_ns - 1000)[0] - last_sent_s)
    odom.paused = False
    return out


def watchdog_latencies(node, listener, blocks: int, block_s: float, wait_until) -> list[float]:
    """(b): seconds from the start of a blocked controller step to the receipt of the watchdog's stop."""
    out = []
    for _ in range(blocks):
        wait_driving(node, wait_until, 0.5)
        controller = node.controller
        step = controller.step
        began: list[tuple[float, int]] = []

        def blocking_step(state, step=step, began=began):
            if not began:
                began.append((time.monotonic(), node.get_clock().now().nanoseconds))
                time.sleep(block_s)
            return step(state)

        controller.step = blocking_step
        wait_until(lambda: bool(began) and time.monotonic() > began[0][0] + block_s + 0.1, timeout_s=10.0)
        del controller.step  # the class's method again
        got = listener.first_after(began[0][1])
        out.append(got[0] - began[0][0] if got else float("nan"))
    return out


def flood_window(node, odom_hz: float, seconds: float, measure_s: float, domain: int, wait_until) -> dict[str, Any]:
    """(c): step time and lateness of the ticks on fresh odometry while a separate process publishes at ``odom_hz``."""
    child = subprocess.Popen([sys.executable, __file__, "--publish-odom", str(odom_hz), "--seconds", str(seconds),
                              "--domain", str(domain)], stdout=subprocess.PIPE, text=True)
    try:
        if child.stdout.readline().strip() != "publishing":
            raise RuntimeError("the odometry publisher process did not start")
        wait_driving(node, wait_until, 1.0)
        start_t_s = node.get_clock().now().nanoseconds * 1e-9
        time.sleep(measure_s)
        stats = node.stats
        n = stats.log_count
        window = (stats.log_t_s[:n] >= start_t_s) & (stats.log_t_s[:n] < start_t_s + measure_s) & ~stats.log_stale[:n]
        step_ms, late_ms = stats.log_step_ms[:n][window], stats.log_late_ms[:n][window]
        out, _ = child.communicate(timeout=seconds + 30.0)
    finally:
        if child.poll() is None:
            child.kill()
    sent = json.loads(out.strip().splitlines()[-1])
    return {"odom_hz_asked": odom_hz, "odom_hz_sent": round(sent["rate_hz"], 1), "ticks": int(window.sum()),
            "tick_rate_hz": round(window.sum() / measure_s, 1),
            "step_p50_ms": float(np.percentile(step_ms, 50)), "step_p99_ms": float(np.percentile(step_ms, 99)),
            "step_max_ms": float(step_ms.max()), "late_p99_ms": float(np.percentile(late_ms, 99))}


def summary(values: list[float]) -> dict[str, float]:
    ms = 1e3 * np.asarray(values)
    return {"n": int(len(ms)), "min_ms": float(ms.min()), "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)), "max_ms": float(ms.max())}


def markdown(results: dict[str, Any]) -> str:
    """The figures as one markdown table."""
    a, b, (normal, flood) = results["safe_stop"], results["watchdog"], results["flood"]
    rows = ["| figure | n | min | median | p90 | max |", "|---|---|---|---|---|---|"]
    for name, s in ((f"(a) safe stop after the last odometry (timeout {1e3 * ODOM_TIMEOUT_S:.0f} ms)", a),
                    (f"(b) watchdog stop after a tick blocks ({results['block_s']:g} s block)", b)):
        rows.append(f"| {name} | {s['n']} | {s['min_ms']:.1f} ms | {s['p50_ms']:.1f} ms | {s['p90_ms']:.1f} ms "
                    f"| {s['max_ms']:.1f} ms |")
    rows += ["", "| (c) odometry feed | sent | ticks/s | step p50 | step p99 | step max | tick lateness p99 |",
             "|---|---|---|---|---|---|---|"]
    for w in (normal, flood):
        rows.append(f"| {w['odom_hz_asked']:.0f} Hz | {w['odom_hz_sent']:.0f} Hz | {w['tick_rate_hz']:.1f} "
                    f"| {w['step_p50_ms']:.2f} ms | {w['step_p99_ms']:.2f} ms | {w['step_max_ms']:.2f} ms "
                    f"| {w['late_p99_ms']:.2f} ms |")
    return "\n".join(rows)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    domain = domain_id()
    from mbrl_control.ros.env import ensure_ros_env

    ensure_ros_env(domain)
    from test_ros_support import FakeOdometry, ros_context, spinning, wait_until

    with ros_context(domain) as context:
        odom = FakeOdometry(context, start_state(), rate_hz=NORMAL_ODOM_HZ)
        node = make_node(context)
        listener = DriveListener(context)
        with spinning(context, [odom, node]):
            listener.thread.start()
            try:
                stops = safe_stop_latencies(node, odom, listener, args.trials, wait_until)
                blocks = watchdog_latencies(node, listener, args.blocks, args.block_s, wait_until)
                odom.paused = True  # from here on odometry comes from the publisher process only
                flood = [flood_window(node, hz, args.measure_s + 4.0, args.measure_s, domain, wait_until)
                         for hz in (NORMAL_ODOM_HZ, args.flood_hz)]
            finally:
                listener.executor.shutdown()
                listener.thread.join(timeout=5.0)
    return {"safe_stop": summary(stops), "safe_stop_s": stops, "watchdog": summary(blocks), "watchdog_s": blocks,
            "block_s": args.block_s, "flood": flood, "controller": "mppi (defaults)", "rate_hz": RATE_HZ,
            "odom_timeout_s": ODOM_TIMEOUT_S}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20, help="odometry stops for (a)")
    p.add_argument("--blocks", type=int, default=10, help="blocked ticks for (b)")
    p.add_argument("--block-s", type=float, default=0.6, help="how long a blocked tick blocks [s]")
    p.add_argument("--flood-hz", type=float, default=5000.0, help="odometry rate of the flood for (c) [Hz]")
    p.add_argument("--measure-s", type=float, default=8.0, help="measuring window of each feed in (c) [s]")
    p.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    p.add_argument("--publish-odom", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--domain", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.publish_odom is not None:
        publish_odometry(args.publish_odom, args.seconds, args.domain)
        return 0
    results = measure(args)
    print(markdown(results))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
