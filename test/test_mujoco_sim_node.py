"""Acceptance 3 (part): ``sim_node`` runs with ``plant: mujoco`` (rclpy in the venv; private context and domain)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mbrl_control.models import S

rclpy = pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed in this environment")

from ackermann_msgs.msg import AckermannDriveStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from mbrl_control.ros.sim_node import SimNode  # noqa: E402
from mbrl_control.sim.mujoco_plant import MujocoPlant  # noqa: E402


@pytest.fixture()
def context():
    ctx = Context()
    rclpy.init(context=ctx, domain_id=87)
    yield ctx
    rclpy.shutdown(context=ctx)


def make_node(context, **overrides) -> SimNode:
    params = {"plant": "mujoco", "track": "default", **overrides}
    return SimNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def test_sim_node_steps_the_mujoco_plant_on_drive_commands(context, params):
    node = make_node(context)
    try:
        assert isinstance(node.plant, MujocoPlant)
        x0 = node.measured.copy()
        drive = AckermannDriveStamped()
        drive.drive.acceleration, drive.drive.steering_angle = 2.0, 0.1
        for _ in range(100):  # 1 s of simulated time at 100 Hz
            node._on_drive(drive)
            node._on_tick()
        z = node.measured
        assert z[S.V] == pytest.approx(2.0, abs=0.05)
        assert z[S.STEER] == pytest.approx(0.1, abs=5e-3)
        assert np.hypot(z[S.X] - x0[S.X], z[S.Y] - x0[S.Y]) == pytest.approx(1.0, abs=0.05)
        odom = node._odom_msg
        assert odom.twist.twist.linear.x == pytest.approx(z[S.V] * np.cos(z[S.SLIP]), abs=1e-9)
        assert odom.pose.pose.position.x == pytest.approx(z[S.X]) and odom.header.frame_id == "map"
        assert node._clock_msg.clock.sec == 1 and node._clock_msg.clock.nanosec == 0
    finally:
        node.destroy_node()


def test_sim_node_publishes_mujoco_odometry_when_spun(context):
    node = make_node(context, real_time_factor=5.0)
    listener = rclpy.create_node("odom_listener", context=context)
    received: list[Odometry] = []
    listener.create_subscription(Odometry, "odom", received.append, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 20.0
        while len(received) < 5 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert len(received) >= 5
        assert all(np.isfinite(m.pose.pose.position.x) for m in received)
    finally:
        executor.shutdown()
        listener.destroy_node()
        node.destroy_node()
