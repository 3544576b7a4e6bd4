"""Helpers for the ROS tests (imported by test_ros_*.py, test_launch*.py, test_demo*.py; holds no tests).

Each test gets its own rclpy context on a domain id derived from the process id, so concurrent
pytest workers (and other sessions) do not hear each other; discovery stays on localhost.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterator

import numpy as np

from mbrl_control.ros.env import ensure_ros_env

ensure_ros_env()

import rclpy  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.node import Node  # noqa: E402

from mbrl_control.ros import conversions as conv  # noqa: E402
from mbrl_control.ros import qos  # noqa: E402
from mbrl_control.ros.runtime import Spinner, init_context  # noqa: E402

DISCOVERY_TIMEOUT_S = 20.0  # generous: a loaded 2-core CI machine


def test_domain_id() -> int:
    """A domain id for this test process, in [100, 199]."""
    return 100 + os.getpid() % 100


test_domain_id.__test__ = False  # a helper, not a test


@contextlib.contextmanager
def ros_context(domain_id: int | None = None) -> Iterator:
    context = init_context(args=[], domain_id=test_domain_id() if domain_id is None else domain_id)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)


@contextlib.contextmanager
def spinning(context, nodes) -> Iterator[Spinner]:
    spinner = Spinner(context, nodes).start()
    try:
        yield spinner
    finally:
        spinner.stop(shutdown_context=False)


def wait_until(predicate: Callable[[], bool], timeout_s: float = DISCOVERY_TIMEOUT_S, period_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period_s)
    return predicate()


class FakeOdometry(Node):
    """Publishes odometry of a state moving along a straight line at ``rate_hz``; can pause or send NaN."""

    def __init__(self, context, state: np.ndarray, rate_hz: float = 100.0, topic: str = "odom") -> None:
        super().__init__("fake_odometry", context=context)
        self.state = np.array(state, dtype=np.float64)
        self.paused = False
        self.nan = False
        self.sent = 0
        self.last_sent_s = 0.0
        self._msg = Odometry()
        self.pub = self.create_publisher(Odometry, topic, qos.ODOMETRY)
        self.create_timer(1.0 / rate_hz, self._tick, callback_group=MutuallyExclusiveCallbackGroup())

    def _tick(self) -> None:
        if self.paused:
            return
        state = self.state.copy()
        if self.nan:
            state[0] = np.nan
        conv.fill_odometry(self._msg, state, self.get_clock().now().to_msg(), "map", "base_link")
        self.pub.publish(self._msg)
        self.sent += 1
        self.last_sent_s = time.monotonic()
