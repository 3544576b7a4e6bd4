"""Issue 15, case 3: every published command field within the vehicle limits, implausible odometry rejected.

Odometry at 1e6 m/s used to give ``drive.speed`` = 1e6 (also during the safe stop), 30 m/s gave
30.1 with v_max 20, and odometry at x = 1e300 was driven on. The node test runs controller_node
over real DDS with a controller that asks for far more than the car can do.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mbrl_control.control import factory
from mbrl_control.control.base import Controller, safe_stop_command
from mbrl_control.models.layout import S, STATE_DIM, U
from mbrl_control.sim.plant import initial_state_at
from test_ros_support import FakeOdometry, ros_context, spinning, wait_until

from ackermann_msgs.msg import AckermannDriveStamped  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from mbrl_control.ros import conversions as conv  # noqa: E402
from mbrl_control.ros import qos  # noqa: E402
from mbrl_control.ros.controller_node import ControllerNode  # noqa: E402

WILD_U = np.array([5.0, 100.0])  # 5 rad of steering, 100 m/s^2


class WildController(Controller):
    name = "wild"

    def step(self, state):
        return WILD_U.copy()


def make_wild(params, dt_s, track, model, options):
    return WildController(params, dt_s)


@pytest.fixture()
def wild_registered(monkeypatch):
    monkeypatch.setitem(factory.CONTROLLERS, "wild", (__name__, "make_wild"))


def f32(limit: float) -> float:
    """A limit as a float32 message field can hold it (the field of a command at the limit)."""
    return float(np.float32(limit))


def assert_drive_in_limits(drive, params) -> None:
    assert math.isfinite(drive.speed) and f32(params.v_min_mps) <= drive.speed <= f32(params.v_max_mps), drive.speed
    assert f32(params.steer_min_rad) <= drive.steering_angle <= f32(params.steer_max_rad), drive.steering_angle
    assert abs(drive.acceleration) <= f32(params.accel_max_mps2), drive.acceleration


def assert_twist_in_limits(twist, params) -> None:
    v, wz = twist.linear.x, twist.angular.z
    assert math.isfinite(v) and f32(params.v_min_mps) <= v <= f32(params.v_max_mps), v
    bound = max(params.v_max_mps, -params.v_min_mps) * math.tan(max(params.steer_max_rad, -params.steer_min_rad))
    assert math.isfinite(wz) and abs(wz) <= f32(bound / params.wheelbase_m) * (1 + 1e-7), wz
    assert twist.linear.y == twist.linear.z == twist.angular.x == twist.angular.y == 0.0


def _odom(x=0.0, y=0.0, v=3.0) -> Odometry:
    state = np.zeros(STATE_DIM)
    state[S.X], state[S.Y], state[S.V] = x, y, v
    return conv.fill_odometry(Odometry(), state, conv.s_to_stamp(0.0), "map", "base_link")


# ------------------------------------------------------------------ units
@pytest.mark.parametrize("speed", [1e6, -1e6, 30.0, -30.0, math.nan, math.inf, 0.0])
@pytest.mark.parametrize("u", [WILD_U, -WILD_U, np.array([math.nan, math.inf]), np.array([0.1, -1.0])])
def test_published_fields_are_clipped(params, speed, u):
    drive = conv.fill_drive(AckermannDriveStamped(), u, speed, conv.s_to_stamp(0.0), "b", limits=params).drive
    assert_drive_in_limits(drive, params)
    twist = conv.fill_twist(TwistStamped(), u, speed, params.wheelbase_m, conv.s_to_stamp(0.0), "b", limits=params).twist
    assert_twist_in_limits(twist, params)
    if math.isfinite(speed) and abs(speed) < params.v_max_mps and np.all(np.abs(u) < 1.0):
        assert drive.speed == pytest.approx(speed, rel=1e-6) and drive.steering_angle == pytest.approx(u[0], rel=1e-6)
    assert conv.command_speed_mps(speed if math.isfinite(speed) else 0.0, u, 0.02, params) <= params.v_max_mps


def test_safe_stop_never_exceeds_the_acceleration_limit(params):
    weak = params.replace(accel_max_mps2=1.5)
    state = np.zeros(STATE_DIM)
    for v in (-1e6, -20.0, 3.0, 1e6):
        state[S.V] = v
        assert abs(safe_stop_command(state, weak, 0.02)[U.ACCEL]) <= weak.accel_max_mps2


def test_odometry_gate_rejects_implausible_odometry(params):
    gate = conv.OdometryGate(params)
    t = 0
    assert gate.check(_odom(0.0, 0.0, 3.0), t) is not None
    for bad, needle in ((_odom(0.0, 0.0, 1e6), "speed"), (_odom(1e300, 0.0), "position"),
                        (_odom(math.nan, 0.0), "non-finite"), (_odom(0.0, -2e5), "position")):
        t += 10_000_000
        assert gate.check(bad, t) is None and needle in gate.last_reason
    t += 10_000_000
    assert gate.check(_odom(0.05, 0.0, 30.0), t) is not None  # fast but physical (above v_max): accepted
    # a jump of 50 m in 10 ms is rejected; a single spike does not move the anchor
    t += 10_000_000
    assert gate.check(_odom(50.0, 0.0), t) is None and "jumped" in gate.last_reason
    t += 10_000_000
    assert gate.check(_odom(0.1, 0.0), t) is not None
    # a relocalisation: accepted once consistent messages at the new place keep coming
    accepted = []
    for k in range(conv.ODOM_REANCHOR_COUNT + 2):
        t += 10_000_000
        accepted.append(gate.check(_odom(200.0 + 0.01 * k, 5.0), t) is not None)
    assert accepted == [False] * (conv.ODOM_REANCHOR_COUNT - 1) + [True] * 3
    assert gate.rejected == 4 + 1 + conv.ODOM_REANCHOR_COUNT - 1


# ------------------------------------------------------------------ the node
class DriveRecorder(Node):
    def __init__(self, context, twist: bool = False) -> None:
        super().__init__("bounds_recorder", context=context)
        self.msgs: list = []
        if twist:
            self.create_subscription(TwistStamped, "cmd_vel", self.msgs.append, qos.COMMAND)
        else:
            self.create_subscription(AckermannDriveStamped, "drive", self.msgs.append, qos.COMMAND)


@pytest.mark.parametrize("command_type", ["ackermann", "twist"])
def test_node_publishes_only_bounded_commands_under_hostile_odometry(params, wild_registered, command_type):
    values = {"controller": "wild", "rate_hz": 50.0, "odom_timeout_s": 0.1, "warmup_steps": 2, "path_rate_hz": 0.0,
              "diagnostics_period_s": 0.5, "step_log_capacity": 5000, "command_type": command_type}
    twist = command_type == "twist"
    check = (lambda m: assert_twist_in_limits(m.twist, params)) if twist else \
        (lambda m: assert_drive_in_limits(m.drive, params))
    with ros_context() as context:
        odom = FakeOdometry(context, initial_state_at(0.0, 0.0, 0.0, 30.0, params))  # 30 m/s > v_max 20
        node = ControllerNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        rec = DriveRecorder(context, twist)
        with spinning(context, [odom, node, rec]):
            assert wait_until(lambda: len(rec.msgs) >= 10 and not node._stopped)
            assert node._rejected_odom == 0  # 30 m/s is physical: driven on, but the set-point is clipped
            odom.state[S.V] = 1e6
            rejected = node._rejected_odom
            assert wait_until(lambda: node._rejected_odom >= rejected + 20 and node.stats.stale_steps >= 5)
            odom.state[S.V] = 3.0
            odom.state[S.X] = 1e300
            rejected = node._rejected_odom
            assert wait_until(lambda: node._rejected_odom >= rejected + 20)
            n = len(rec.msgs)
            assert wait_until(lambda: len(rec.msgs) >= n + 5)
            msgs = list(rec.msgs)
        assert np.all(np.abs(node.stats.log_state[:node.stats.log_count]) < 1e5)  # never driven on x = 1e300
    for m in msgs:
        check(m)
    speeds = [m.twist.linear.x if twist else m.drive.speed for m in msgs]
    assert max(speeds) == pytest.approx(params.v_max_mps)  # the 30 m/s phase asked for more: clipped to v_max
