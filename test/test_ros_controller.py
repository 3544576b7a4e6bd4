"""controller_node over real DDS (one process, own domain): watchdog, NaN guard, faults, hot swap, outputs.

A probe controller (registered for these tests) returns a fixed command and records what the node
does to it: the states it sees, resets, and from which thread and when ``set_model`` is called.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from mbrl_control.control import factory
from mbrl_control.control.base import Controller, safe_stop_command
from mbrl_control.models.layout import S, U
from mbrl_control.sim.plant import initial_state_at
from test_ros_support import FakeOdometry, ros_context, spinning, wait_until

from ackermann_msgs.msg import AckermannDriveStamped  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Path  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from mbrl_control.ros import conversions as conv  # noqa: E402
from mbrl_control.ros import model_auth, qos  # noqa: E402
from mbrl_control.ros.controller_node import ControllerNode  # noqa: E402

RATE_HZ = 50.0
TIMEOUT_S = 0.1
PROBE_U = np.array([0.05, 1.25])


class ProbeController(Controller):
    """Fixed command; records states, resets, model swaps; can fail on request."""

    name = "probe"

    def __init__(self, params, dt_s, track, model) -> None:
        super().__init__(params, dt_s)
        self._model = model
        self.track = track
        self.states: list[np.ndarray] = []
        self.resets = 0
        self.swaps: list[tuple[int, bool]] = []  # (thread id, called during a step?)
        self.step_threads: set[int] = set()
        self.candidate_calls = 0
        self.fail = False
        self._in_step = False

    def reset(self, state) -> None:
        self.resets += 1

    def step(self, state):
        self._in_step = True
        try:
            self.states.append(np.array(state))
            self.step_threads.add(threading.get_ident())
            if self.fail:
                raise RuntimeError("probe failure")
            return PROBE_U.copy()
        finally:
            self._in_step = False

    def planned_xy(self):
        return np.array([[0.0, 0.0], [1.0, 0.5], [2.0, 1.0]])

    def candidate_xy(self, max_count):
        self.candidate_calls += 1
        return np.zeros((3, 4, 2)) + np.arange(4)[None, :, None]

    @property
    def model(self):
        return self._model

    def set_model(self, model) -> None:
        self.swaps.append((threading.get_ident(), self._in_step))
        self._model = model


def make_probe(params, dt_s, track, model, options):
    return ProbeController(params, dt_s, track, model)


@pytest.fixture()
def probe_registered(monkeypatch):
    monkeypatch.setitem(factory.CONTROLLERS, "probe", (__name__, "make_probe"))


class Recorder(Node):
    """Collects messages of a few topics (test side)."""

    def __init__(self, context) -> None:
        super().__init__("test_recorder", context=context)
        self.drives: list[AckermannDriveStamped] = []
        self.paths: list[Path] = []
        self.markers: list[MarkerArray] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.create_subscription(AckermannDriveStamped, "drive", self.drives.append, qos.COMMAND)
        self.create_subscription(Path, "/controller_node/optimal_path", self.paths.append, qos.VISUALIZATION)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, qos.DIAGNOSTICS)

    def watch_candidates(self) -> None:
        self.create_subscription(MarkerArray, "/controller_node/candidates", self.markers.append, qos.VISUALIZATION)


def _controller(context, **overrides) -> ControllerNode:
    values = {"controller": "probe", "rate_hz": RATE_HZ, "odom_timeout_s": TIMEOUT_S, "warmup_steps": 2,
              "path_rate_hz": 20.0, "diagnostics_period_s": 0.2, "step_log_capacity": 5000, **overrides}
    return ControllerNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def _start_state(params) -> np.ndarray:
    return initial_state_at(0.0, 0.0, 0.3, 3.0, params)


def _log(node: ControllerNode) -> dict:
    n = node.stats.log_count
    return {"t": node.stats.log_t_s[:n].copy(), "stale": node.stats.log_stale[:n].copy(),
            "u": node.stats.log_control[:n].copy(), "late_ms": node.stats.log_late_ms[:n].copy()}


def test_watchdog_stops_within_timeout_plus_a_period_and_recovers(params, probe_registered):
    with ros_context() as context:
        odom = FakeOdometry(context, _start_state(params))
        node, rec = _controller(context), Recorder(context)
        with spinning(context, [odom, node, rec]) as spinner:
            assert wait_until(lambda: sum(np.allclose([d.drive.steering_angle, d.drive.acceleration], PROBE_U, atol=1e-6)
                                          for d in rec.drives) >= 10)
            probe: ProbeController = node.controller
            resets_before = probe.resets
            odom.paused = True
            assert wait_until(lambda: node.stats.stale_steps >= 10)
            last_rx_s = node._odom[1] * 1e-9
            log = _log(node)
            judged = _judged_at_s(log)
            after = np.flatnonzero(judged > last_rx_s)
            first_stale = after[np.argmax(log["stale"][after])]
            assert log["stale"][first_stale]
            # the first tick due past the timeout stops (judged at its scheduled time, its lateness credited up to
            # one timeout); the tick before it still had fresh odometry
            assert judged[first_stale] - last_rx_s > TIMEOUT_S
            assert judged[first_stale - 1] - last_rx_s <= TIMEOUT_S
            # within a bound of ticks: at most timeout / period + 1 ticks due after the last receipt, the stop included
            assert first_stale - after[0] + 1 <= int(TIMEOUT_S * RATE_HZ) + 1
            assert node.stale_input_steps >= 5 and node._verdict is not None and not node._verdict.fresh
            stop = safe_stop_command(_start_state(params), params, 1.0 / RATE_HZ)
            np.testing.assert_allclose(log["u"][first_stale], stop)
            assert stop[U.ACCEL] < 0 and stop[U.STEER_CMD] == 0.0
            # the brake fades out as the remembered speed reaches zero: never drives backwards
            assert wait_until(lambda: node._stop_speed == 0.0, timeout_s=5.0)
            stale_u = _log(node)["u"][_log(node)["stale"]]
            assert np.all(stale_u[:, U.STEER_CMD] == 0.0) and np.all(stale_u[:, U.ACCEL] <= 0.0)
            lost = -np.sum(stale_u[:, U.ACCEL]) / RATE_HZ  # speed the brake took off at the nominal period
            assert lost == pytest.approx(_start_state(params)[S.V], rel=0.1) and stale_u[-1, U.ACCEL] == 0.0
            odom.paused = False
            assert wait_until(lambda: not node._stopped and node.stats.log_count > 0 and not _log(node)["stale"][-1])
            assert probe.resets == resets_before + 1  # restarted from a reset after the stop
            assert wait_until(lambda: np.allclose(rec.drives[-1].drive.acceleration, PROBE_U[U.ACCEL], atol=1e-6))
            # warm-up steps ran while building the node; every loop step in the executor's spin thread
            assert probe.step_threads == {threading.get_ident(), spinner._thread.ident}


def _judged_at_s(log: dict) -> np.ndarray:
    """The node-clock time each logged tick judged the odometry at: its start, less its lateness (at most a timeout)."""
    return log["t"] - 1e-3 * np.minimum(log["late_ms"], 1e3 * TIMEOUT_S)


class StampedOdometry(FakeOdometry):
    """FakeOdometry whose header stamp can be shifted off the clock or frozen (a sender re-sending one message)."""

    def __init__(self, context, state) -> None:
        super().__init__(context, state)
        self.stamp_offset_s = 0.0
        self.frozen_stamp = None

    def _tick(self) -> None:
        if self.paused:
            return
        now_ns = self.get_clock().now().nanoseconds + int(self.stamp_offset_s * 1e9)
        stamp = conv.s_to_stamp(now_ns * 1e-9) if self.frozen_stamp is None else self.frozen_stamp
        conv.fill_odometry(self._msg, self.state, stamp, "map", "base_link")
        self.pub.publish(self._msg)
        self.sent += 1


class MovingOdometry(StampedOdometry):
    """Odometry of a car driving straight along x at ``speed_mps`` (position from the clock)."""

    def __init__(self, context, state, speed_mps: float) -> None:
        super().__init__(context, state)
        self.speed_mps = speed_mps
        self._x0 = float(state[S.X])
        self._t0_ns = self.get_clock().now().nanoseconds

    def _tick(self) -> None:
        self.state[S.X] = self._x0 + self.speed_mps * (self.get_clock().now().nanoseconds - self._t0_ns) * 1e-9
        super()._tick()


def test_odometry_waiting_in_the_middleware_is_taken_before_a_safe_stop(params, probe_registered):
    """The odometry callback's thread stalls for five timeouts while odometry keeps coming: the ticks take the
    waiting messages themselves instead of stopping the car (the node's own delay, not the input's). The message
    the stalled callback then delivers is older than those: dropped, not a position jump back (the car drives
    at 15 m/s: 7.5 m in the stall)."""
    with ros_context() as context:
        odom = MovingOdometry(context, initial_state_at(0.0, 0.0, 0.0, 3.0, params), speed_mps=15.0)
        node = _controller(context)
        with spinning(context, [odom, node]):
            assert wait_until(lambda: node.stats.log_count >= 10 and not _log(node)["stale"][-1])
            stale_before, queued_before = node.stale_input_steps, node.stale_avoided_queued
            rejected_before = node._rejected_odom
            original = node._odom_sub.callback
            stalled, release = threading.Event(), threading.Event()

            def stalling(msg) -> None:
                if not stalled.is_set():
                    stalled.set()
                    release.wait(5 * TIMEOUT_S)  # the callback thread is held (as a starved thread would be)
                original(msg)

            node._odom_sub.callback = stalling
            assert wait_until(stalled.is_set)
            steps = node.stats.steps
            assert wait_until(lambda: node.stats.steps >= steps + int(4 * TIMEOUT_S * RATE_HZ))
            stale_during = node.stale_input_steps - stale_before
            release.set()
            node._odom_sub.callback = original
            assert stale_during == 0
            assert node.stale_avoided_queued > queued_before and node.odometry_taken_in_ticks > 0
            assert wait_until(lambda: node.odometry_superseded >= 1)  # the stalled callback's message, delivered last
            steps = node.stats.log_count
            assert wait_until(lambda: node.stats.log_count >= steps + 10)
            assert node._rejected_odom == rejected_before and not np.any(_log(node)["stale"][steps:])


def test_odometry_with_implausible_or_repeated_stamps_ends_in_the_safe_stop(params, probe_registered):
    """Stamps ahead of the node clock beyond odom_stamp_tolerance_s, or a sender re-sending one message: refused,
    so the node stops as without odometry; good stamps again: it drives again."""
    with ros_context() as context:
        odom = StampedOdometry(context, _start_state(params))
        node = _controller(context, odom_stamp_tolerance_s=0.3)
        with spinning(context, [odom, node]):
            assert wait_until(lambda: node.stats.log_count >= 5 and not _log(node)["stale"][-1])
            for shift in (dict(stamp_offset_s=2.0), dict(stamp_offset_s=-(TIMEOUT_S + 0.3) - 1.0),
                          dict(frozen_stamp=conv.s_to_stamp(node.get_clock().now().nanoseconds * 1e-9))):
                refused, stale = node._bad_stamps, node.stale_input_steps
                for key, value in shift.items():
                    setattr(odom, key, value)
                assert wait_until(lambda: node.stale_input_steps >= stale + 5 and _log(node)["stale"][-1]), shift
                assert node._bad_stamps > refused + 5
                odom.stamp_offset_s, odom.frozen_stamp = 0.0, None
                assert wait_until(lambda: not _log(node)["stale"][-1]), shift
            # a stamp within the tolerance ahead (an unsynchronised but close clock) is used
            refused = node._bad_stamps
            odom.stamp_offset_s = 0.2
            steps = node.stats.log_count
            assert wait_until(lambda: node.stats.log_count >= steps + 20)
            assert not np.any(_log(node)["stale"][steps + 5:]) and node._bad_stamps == refused


def test_nan_odometry_is_rejected_and_faults_become_safe_stops(params, probe_registered):
    with ros_context() as context:
        odom = FakeOdometry(context, _start_state(params))
        node, rec = _controller(context), Recorder(context)
        with spinning(context, [odom, node, rec]):
            assert wait_until(lambda: len(rec.drives) >= 5)
            probe: ProbeController = node.controller
            odom.nan = True
            assert wait_until(lambda: node._rejected_odom >= 20 and node.stats.stale_steps >= 5)
            assert all(np.all(np.isfinite(s)) for s in probe.states)
            odom.nan = False
            assert wait_until(lambda: not _log(node)["stale"][-1])
            guarded = node.stats.guarded_steps
            probe.fail = True
            assert wait_until(lambda: node._faults >= 5)
            probe.fail = False
            assert node.stats.guarded_steps >= guarded + 5
            u = _log(node)["u"]
            assert np.all(np.isfinite(u))
            assert np.all(np.abs(u[:, U.STEER_CMD]) <= params.steer_max_rad)
            assert np.all(np.abs(u[:, U.ACCEL]) <= params.accel_max_mps2)
            drives = np.array([[d.drive.steering_angle, d.drive.acceleration] for d in rec.drives])
            assert np.all(np.isfinite(drives))


def test_model_hot_swap_happens_in_the_control_thread_between_steps(params, probe_registered, tmp_path):
    from mbrl_control.models.semiparametric import physics_only

    good = physics_only(params, 1.0 / RATE_HZ).save(tmp_path / "model_v001.pt")
    wrong_dt = physics_only(params, 0.05).save(tmp_path / "model_v002.pt")
    with ros_context() as context:
        odom = FakeOdometry(context, _start_state(params))
        node = _controller(context, model_dir=str(tmp_path))
        secret = model_auth.run_secret(tmp_path)  # the key file the node made (as sysid_node would read it)
        announcer = Node("announcer", context=context)
        pub = announcer.create_publisher(String, "model_updates", qos.MODEL_UPDATES)
        with spinning(context, [odom, node, announcer]) as spinner:
            assert wait_until(lambda: node.stats.steps >= 5)
            probe: ProbeController = node.controller
            initial_swaps = len(probe.swaps)  # the warm-up exercised the swap path before the loop started
            pub.publish(String(data=json.dumps(model_auth.announcement(secret, 1, good, metrics={}))))
            assert wait_until(lambda: node.model_version == 1)
            assert node.model_swaps == 1 and len(probe.swaps) == initial_swaps + 1
            thread, during_step = probe.swaps[-1]
            assert thread == spinner._thread.ident and not during_step
            assert type(probe.model).__name__ == "SemiParametricModel"
            missing = dict(model_auth.announcement(secret, 3, good), path=str(tmp_path / "missing.pt"))
            missing["hmac"] = model_auth.sign(secret, 3, missing["path"], missing["sha256"])
            bad = [json.dumps(model_auth.announcement(secret, 2, wrong_dt)), "not json", json.dumps(missing)]
            for count, data in enumerate(bad, 1):  # keep-last-1: one at a time
                pub.publish(String(data=data))
                assert wait_until(lambda n=count: node._model_gate.rejected >= n)
            assert wait_until(lambda: node.stats.steps >= 60)
            assert node.model_version == 1 and node.model_swaps == 1  # rejected files never reach the controller
            versions = _log_versions(node)
            assert versions[0] == 0 and versions[-1] == 1 and np.all(np.diff(versions) >= 0)


def _log_versions(node: ControllerNode) -> np.ndarray:
    return node.stats.log_model_version[:node.stats.log_count].copy()


def test_paths_candidates_and_diagnostics(params, probe_registered):
    with ros_context() as context:
        odom = FakeOdometry(context, _start_state(params))
        node, rec = _controller(context), Recorder(context)
        with spinning(context, [odom, node, rec]):
            assert wait_until(lambda: len(rec.paths) >= 3 and len(rec.diagnostics) >= 3)
            assert node.controller.candidate_calls == 0  # nobody listens: candidates are never built
            path = rec.paths[-1]
            assert [(p.pose.position.x, p.pose.position.y) for p in path.poses] == [(0.0, 0.0), (1.0, 0.5), (2.0, 1.0)]
            rec.watch_candidates()
            assert wait_until(lambda: len(rec.markers) >= 2)
            assert node.controller.candidate_calls >= 2
            assert len(rec.markers[-1].markers[0].points) == 3 * 3 * 2
            status = next(s for s in rec.diagnostics[-1].status if s.name == "controller_node: control loop")
            values = {kv.key: kv.value for kv in status.values}
            for key in ("rate_hz", "step_p50_ms", "step_p99_ms", "deadline_misses", "model_version", "ensemble_spread",
                        "stale_steps", "odometry_age_s"):
                assert key in values
            assert float(values["rate_hz"]) == pytest.approx(RATE_HZ, rel=0.1)
            assert values["model_version"] == "0" and values["ensemble_spread"] == "nan"  # a plain physics model


def test_controller_follows_sim_time(params, probe_registered):
    """With use_sim_time the timer runs on /clock: no clock, no ticks; 1 s of sim time, ~50 ticks."""
    from rosgraph_msgs.msg import Clock

    from mbrl_control.ros import conversions as conv

    with ros_context() as context:
        odom = FakeOdometry(context, _start_state(params))
        node = _controller(context, use_sim_time=True, odom_timeout_s=5.0)
        clock_node = Node("clock_source", context=context)
        clock_pub = clock_node.create_publisher(Clock, "/clock", qos.CLOCK)
        with spinning(context, [odom, node, clock_node]):
            assert wait_until(lambda: clock_pub.get_subscription_count() > 0)
            clock_pub.publish(Clock(clock=conv.s_to_stamp(100.0)))
            assert wait_until(lambda: node.get_clock().now().nanoseconds == 100_000_000_000)
            steps_before = node.stats.steps
            for k in range(1, 101):  # 1 s of sim time in 10 ms increments, faster than real time
                clock_pub.publish(Clock(clock=conv.s_to_stamp(100.0 + 0.01 * k)))
                threading.Event().wait(0.004)
            assert wait_until(lambda: node.get_clock().now().nanoseconds == 101_000_000_000)
            threading.Event().wait(0.2)
            ticks = node.stats.steps - steps_before
            assert 45 <= ticks <= 52
            threading.Event().wait(0.3)  # sim time stands still: so does the control loop
            assert node.stats.steps - steps_before == ticks


def test_a_path_topic_replaces_the_track(params, probe_registered):
    """With use_path_topic, a nav_msgs/Path becomes the reference (a corridor track), swapped in between ticks."""
    from geometry_msgs.msg import PoseStamped

    with ros_context() as context:
        odom = FakeOdometry(context, _start_state(params))
        node = _controller(context, use_path_topic=True, path_half_width_m=0.8)
        source = Node("path_source", context=context)
        pub = source.create_publisher(Path, "path", qos.ODOMETRY)
        angles = np.linspace(0.0, 2 * np.pi, 40, endpoint=False)
        msg = Path()
        for a in angles:
            pose = PoseStamped()
            pose.pose.position.x, pose.pose.position.y = 5.0 * np.cos(a), 5.0 * np.sin(a)
            msg.poses.append(pose)
        short = Path()
        short.poses = msg.poses[:3]
        with spinning(context, [odom, node, source]):
            assert wait_until(lambda: pub.get_subscription_count() > 0 and node.stats.steps > 3)
            first = node.controller
            pub.publish(short)  # too short: ignored
            pub.publish(msg)
            assert wait_until(lambda: node.controller is not first)
            track = node.controller.track
            assert track.name == "path" and track.length_m == pytest.approx(2 * np.pi * 5.0, rel=0.01)
            assert np.allclose(track.width_left_m, 0.8) and node.controller.resets >= 1
            steps = node.stats.steps
            assert wait_until(lambda: node.stats.steps > steps + 5) and node._faults == 0
