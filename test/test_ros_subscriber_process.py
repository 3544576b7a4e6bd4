"""Acceptance 2: a separate plain-rclpy process receives the commands at >= 49 Hz, equal to the controller's output.

sim_node and controller_node (pure pursuit) run in this process; the subscriber is a small
script in a child process that only uses rclpy and the message packages (no project code), on
the same domain. Its messages are matched to the controller's per-step log by header stamp.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mbrl_control.models.layout import S, U
from test_ros_support import DISCOVERY_TIMEOUT_S, ros_context, spinning, test_domain_id

from rclpy.parameter import Parameter  # noqa: E402

from mbrl_control.ros.controller_node import ControllerNode  # noqa: E402
from mbrl_control.ros.sim_node import SimNode  # noqa: E402

LISTEN_S = 4.0
SUBSCRIBER = textwrap.dedent('''
    import json, os, sys, time
    os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from ackermann_msgs.msg import AckermannDriveStamped
    from geometry_msgs.msg import TwistStamped

    domain, kind, listen_s, out = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("plain_subscriber", context=context)
    rows = []
    def on_drive(m):
        rows.append([time.monotonic(), m.header.stamp.sec, m.header.stamp.nanosec, m.drive.steering_angle,
                     m.drive.acceleration, m.drive.speed])
    def on_twist(m):
        rows.append([time.monotonic(), m.header.stamp.sec, m.header.stamp.nanosec, m.twist.linear.x, m.twist.angular.z, 0.0])
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    if kind == "ackermann":
        node.create_subscription(AckermannDriveStamped, "drive", on_drive, qos)
    else:
        node.create_subscription(TwistStamped, "cmd_vel", on_twist, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline and (not rows or rows[-1][0] - rows[0][0] < listen_s):
        executor.spin_once(timeout_sec=0.05)
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)
    with open(out, "w") as fh:
        json.dump(rows, fh)
''')


@pytest.mark.serial  # measures the received rate: alone, after the parallel tests (a loaded run saw 48.7 Hz)
@pytest.mark.parametrize("command_type", ["ackermann", "twist"])
def test_plain_subscriber_process_receives_the_controller_output(params, tmp_path, command_type):
    out = tmp_path / "received.json"
    domain = test_domain_id()
    with ros_context(domain) as context:
        common = [Parameter("command_type", value=command_type)]
        sim = SimNode(context=context, parameter_overrides=common)
        node = ControllerNode(context=context, parameter_overrides=common + [
            Parameter("controller", value="pure_pursuit"), Parameter("step_log_capacity", value=20_000)])
        child = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, str(domain), command_type, str(LISTEN_S), str(out)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with spinning(context, [sim, node]):
            try:
                _, stderr = child.communicate(timeout=60.0 + DISCOVERY_TIMEOUT_S)
            finally:
                child.kill()
        assert child.returncode == 0, stderr
    rows = np.array(json.loads(out.read_text()))
    assert len(rows) > 0.9 * 50 * LISTEN_S
    received_s = rows[:, 0]
    window = received_s >= received_s[0] + 1.0  # after discovery and warm-up
    rate_hz = (window.sum() - 1) / (received_s[window][-1] - received_s[window][0])
    assert rate_hz >= 49.0

    n = node.stats.log_count
    tick_ns = np.round(node.stats.log_t_s[:n] * 1e9).astype(np.int64)
    stamps_ns = rows[:, 1].astype(np.int64) * 1_000_000_000 + rows[:, 2].astype(np.int64)
    index = np.searchsorted(tick_ns, stamps_ns)
    index = np.clip(index, 0, n - 1)
    nearest = np.where(np.abs(tick_ns[index] - stamps_ns) <= np.abs(tick_ns[index - 1] - stamps_ns), index, index - 1)
    assert np.all(np.abs(tick_ns[nearest] - stamps_ns) < 1_000)  # every message is one of the controller's steps
    u = node.stats.log_control[:n][nearest]
    v = node.stats.log_state[:n][nearest, S.V]
    speed = v + u[:, U.ACCEL] / node.cfg["rate_hz"]
    moving = speed > 0.5
    assert moving.sum() > 50
    if command_type == "ackermann":
        np.testing.assert_array_equal(rows[:, 3], u[:, U.STEER_CMD].astype(np.float32))
        np.testing.assert_array_equal(rows[:, 4], u[:, U.ACCEL].astype(np.float32))
        np.testing.assert_array_equal(rows[:, 5], speed.astype(np.float32))
    else:
        np.testing.assert_allclose(rows[:, 3], speed, rtol=0, atol=1e-12)
        yaw_rate = speed * np.tan(u[:, U.STEER_CMD]) / params.wheelbase_m
        np.testing.assert_allclose(rows[:, 4], yaw_rate, rtol=0, atol=1e-12)
        assert math.isclose(sim.measured[S.V], node.stats.log_state[n - 1, S.V], abs_tol=0.5)  # the sim drives on twists
