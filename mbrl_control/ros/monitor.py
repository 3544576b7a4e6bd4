"""A run monitor node: laps, progress and the car's health from the topics, for ``mbrl-control demo``.

It listens to what the other nodes publish: ``odom`` (progress along the track in sim time,
laps, leaving the track, stopping), ``model_updates`` (model versions) and ``/diagnostics`` (the
controller's rate, step times, deadline misses). It decides when the run is over: the laps are
done, the car left the track for good or stopped, or the time limit passed (the same rules as the
offline runner, :class:`mbrl_control.sim.runner.ClosedLoop`).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass

import numpy as np

from mbrl_control.ros.env import ensure_ros_env

ensure_ros_env()

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from mbrl_control.ros import conversions as conv  # noqa: E402
from mbrl_control.ros import qos  # noqa: E402
from mbrl_control.track import Track  # noqa: E402


@dataclass(frozen=True)
class MonitorRules:
    laps: int = 2
    max_time_s: float = 120.0  # sim time
    off_track_for_good_s: float = 1.0
    stopped_for_s: float = 3.0
    stopped_speed_mps: float = 0.05


class RunMonitor(Node):
    """Counts laps on odometry (sim time) and collects the controller's diagnostics."""

    def __init__(self, track: Track, rules: MonitorRules, context: Context | None = None,
                 controller_status: str = "controller_node: control loop", node_name: str = "run_monitor") -> None:
        super().__init__(node_name, context=context)
        self.track = track
        self.rules = rules
        self.controller_status = controller_status
        self.done = threading.Event()
        self.failure: str | None = None
        self.laps_done = 0
        self.lap_times_s: list[float] = []
        self.t_s = 0.0
        self.speed_mps = 0.0
        self.traveled_m = 0.0
        self.model_version = 0
        self.diagnostics: dict[str, str] = {}
        self._t0: float | None = None
        self._prev_progress: float | None = None
        self._prev_t: float | None = None
        self._lap_start_t = 0.0
        self._outside_since: float | None = None
        self._slow_since: float | None = None
        group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Odometry, "odom", self._on_odom, qos.ODOMETRY, callback_group=group)
        self.create_subscription(String, "model_updates", self._on_model, qos.MODEL_UPDATES, callback_group=group)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos.DIAGNOSTICS, callback_group=group)

    def _on_odom(self, msg: Odometry) -> None:
        if self.done.is_set() or not conv.odometry_is_finite(msg):
            return
        t = conv.stamp_to_s(msg.header.stamp)
        x, y, _, vx, vy, _ = conv.odometry_fields(msg)
        self.speed_mps = math.copysign(math.hypot(vx, vy), vx)
        proj = self.track.project(np.array([x, y]))
        progress = float(proj.progress_m)
        if self._t0 is None:
            self._t0 = self._lap_start_t = t
            self._prev_progress, self._prev_t = progress, t
            return
        self.t_s = t - self._t0
        self._count_laps(progress, t)
        right, left = self.track.widths_at(proj.progress_m)
        self._check_health(bool(-right <= proj.lateral_m <= left), t)

    def _count_laps(self, progress: float, t: float) -> None:
        length = self.track.length_m
        step = math.remainder(progress - self._prev_progress, length)
        before = self.traveled_m
        self.traveled_m += step
        target = (self.laps_done + 1) * length
        if before < target <= self.traveled_m:
            crossing = self._prev_t + (t - self._prev_t) * (target - before) / max(step, 1e-9)
            self.lap_times_s.append(crossing - self._lap_start_t)
            self._lap_start_t = crossing
            self.laps_done += 1
            self.get_logger().info(f"lap {self.laps_done}/{self.rules.laps}: {self.lap_times_s[-1]:.2f} s")
            if self.laps_done >= self.rules.laps:
                self.done.set()
        self._prev_progress, self._prev_t = progress, t

    def _check_health(self, inside: bool, t: float) -> None:
        rules = self.rules
        self._outside_since = None if inside else (t if self._outside_since is None else self._outside_since)
        slow = abs(self.speed_mps) < rules.stopped_speed_mps and self.t_s > rules.stopped_for_s
        self._slow_since = None if not slow else (t if self._slow_since is None else self._slow_since)
        if self._outside_since is not None and t - self._outside_since >= rules.off_track_for_good_s:
            self._fail("left the track")
        elif self._slow_since is not None and t - self._slow_since >= rules.stopped_for_s:
            self._fail("car stopped")
        elif self.t_s > rules.max_time_s:
            self._fail(f"time limit of {rules.max_time_s:.0f} s reached")

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self.get_logger().warning(f"run stopped at t={self.t_s:.1f} s: {reason}")
        self.done.set()

    def _on_model(self, msg: String) -> None:
        try:
            self.model_version = max(self.model_version, int(json.loads(msg.data)["version"]))
        except (ValueError, KeyError, TypeError):
            pass

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.controller_status:
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def progress_line(self) -> str:
        """One terminal line: lap, progress, speed, control rate and step time, model version."""
        d = self.diagnostics
        lap = min(self.laps_done + 1, self.rules.laps)
        finished = self.laps_done >= self.rules.laps
        percent = 100.0 if finished else 100.0 * (self.traveled_m % self.track.length_m) / self.track.length_m
        return (f"t={self.t_s:6.1f} s  lap {lap}/{self.rules.laps} {percent:5.1f} %  v={self.speed_mps:5.2f} m/s  "
                f"rate {d.get('rate_hz', '-')} Hz  step p99 {d.get('step_p99_ms', '-')} ms  "
                f"misses {d.get('deadline_misses', '-')}  model v{d.get('model_version', self.model_version)}")
