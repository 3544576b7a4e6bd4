"""ROS helpers without traffic: steering estimator, message conversions, parameters, loop statistics.

References are independent: the steering estimate against the torch model's servo integrated by
scipy, message round trips against rosbags' own CDR (de)serializer, rates against closed forms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from mbrl_control import MbrlError
from mbrl_control.models.bicycle import DynamicSingleTrack
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S, U
from mbrl_control.ros.env import check_domain_id
from mbrl_control.ros.loopstats import LoopStats, achieved_rate_hz
from mbrl_control.ros.steering import SteeringEstimator, servo_rate_radps
from test_ros_support import ros_context

from ackermann_msgs.msg import AckermannDriveStamped  # noqa: E402  (after ros env via test_ros_support)
from geometry_msgs.msg import TwistStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

from mbrl_control.bag import typestore  # noqa: E402
from mbrl_control.ros import conversions as conv  # noqa: E402
from mbrl_control.ros.params import ParamSpec, declare_params, declare_sections, reject_unknown  # noqa: E402


# ------------------------------------------------------------------ steering estimator
@pytest.mark.parametrize("commands", [[0.3, -0.2, 0.05], [0.6, 0.6, -0.6], [0.0, 0.41, 0.41]])
def test_steering_estimate_matches_the_model_servo_integrated_by_scipy(params, commands):
    model = DynamicSingleTrack(params, dtype=torch.float64)

    def servo(_t, d, cmd):
        return [float(model.steer_rate(torch.tensor(d[0]), torch.tensor(cmd)))]

    est = SteeringEstimator(params)
    d_ref = 0.0
    for cmd in commands:  # each command held for 0.13 s (not a multiple of the sub-step)
        est.set_command(cmd)
        got = est.advance(0.13)
        d_ref = solve_ivp(servo, (0.0, 0.13), [d_ref], args=(cmd,), rtol=1e-10, atol=1e-12, max_step=1e-3).y[0, -1]
        assert got == pytest.approx(d_ref, abs=2e-6)
    assert params.steer_min_rad <= est.steer_rad <= params.steer_max_rad


def test_servo_rate_equals_the_torch_model_everywhere(params):
    model = DynamicSingleTrack(params, dtype=torch.float64)
    rng = np.random.default_rng(0)
    steer = np.concatenate([rng.uniform(-0.5, 0.5, 200), [params.steer_max_rad, params.steer_min_rad]])
    cmd = np.concatenate([rng.uniform(-0.7, 0.7, 200), [1.0, -1.0]])
    ref = model.steer_rate(torch.tensor(steer), torch.tensor(cmd)).numpy()
    got = np.array([servo_rate_radps(d, c, params) for d, c in zip(steer, cmd)])
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert got[-2] == 0.0 and got[-1] == 0.0  # pushing past a bound: blocked


def test_steering_estimator_ignores_bad_input(params):
    est = SteeringEstimator(params, steer_rad=0.1)
    est.set_command(float("nan"))
    assert est.command_rad == 0.1
    assert est.advance(-1.0) == 0.1 and est.advance(float("inf")) == 0.1
    est.reset()
    assert est.steer_rad == 0.0 and est.command_rad == 0.0


# ------------------------------------------------------------------ conversions
def _state(x=1.5, y=-2.0, steer=0.1, v=4.0, yaw=2.9, yaw_rate=0.7, slip=0.05) -> np.ndarray:
    s = np.zeros(STATE_DIM)
    s[S.X], s[S.Y], s[S.STEER], s[S.V], s[S.YAW], s[S.YAW_RATE], s[S.SLIP] = x, y, steer, v, yaw, yaw_rate, slip
    return s


def _through_rosbags(msg, msgtype: str):
    """Serialize with rclpy, deserialize with rosbags (an independent CDR implementation)."""
    return typestore().deserialize_cdr(serialize_message(msg), msgtype)


@pytest.mark.parametrize("yaw", [0.3, 3.1, -3.1, 7.0])
def test_odometry_round_trip_recovers_the_state(yaw):
    state = _state(yaw=yaw)
    msg = conv.fill_odometry(Odometry(), state, conv.s_to_stamp(12.345), "map", "base_link")
    back = deserialize_message(serialize_message(msg), Odometry)
    got = conv.state_from_odometry(back, steer_rad=state[S.STEER], yaw_ref_rad=yaw - 0.01)
    np.testing.assert_allclose(got, state, atol=1e-12)
    theirs = _through_rosbags(msg, "nav_msgs/msg/Odometry")
    assert theirs.pose.pose.position.x == state[S.X] and theirs.twist.twist.angular.z == state[S.YAW_RATE]
    assert theirs.header.stamp.sec == 12 and theirs.header.stamp.nanosec == 345_000_000


def test_non_finite_odometry_is_detected():
    msg = conv.fill_odometry(Odometry(), _state(), conv.s_to_stamp(0.0), "map", "base_link")
    assert conv.odometry_is_finite(msg)
    for field in ("x", "y"):
        bad = deserialize_message(serialize_message(msg), Odometry)
        setattr(bad.pose.pose.position, field, math.nan)
        assert not conv.odometry_is_finite(bad)
    bad = deserialize_message(serialize_message(msg), Odometry)
    bad.twist.twist.linear.x = math.inf
    assert not conv.odometry_is_finite(bad)
    bad = deserialize_message(serialize_message(msg), Odometry)
    bad.pose.pose.orientation.w, bad.pose.pose.orientation.z = 0.0, 0.0
    assert not conv.odometry_is_finite(bad)


def test_drive_round_trip_is_the_control_up_to_float32():
    u = np.array([-0.3, 2.7])
    msg = conv.fill_drive(AckermannDriveStamped(), u, 5.1, conv.s_to_stamp(1.0), "base_link")
    back = deserialize_message(serialize_message(msg), AckermannDriveStamped)
    np.testing.assert_allclose(conv.control_from_drive(back), u.astype(np.float32), rtol=0, atol=0)
    theirs = _through_rosbags(msg, "ackermann_msgs/msg/AckermannDriveStamped")
    assert theirs.drive.steering_angle == np.float32(-0.3) and theirs.drive.speed == np.float32(5.1)


@pytest.mark.parametrize("steer, v", [(0.2, 3.0), (-0.35, 7.5), (0.0, 1.0)])
def test_twist_inverts_to_the_control(params, steer, v):
    dt = 0.02
    u = np.array([steer, 1.5])
    speed = conv.command_speed_mps(v, u, dt)
    msg = conv.fill_twist(TwistStamped(), u, speed, params.wheelbase_m, conv.s_to_stamp(0.0), "base_link")
    back = deserialize_message(serialize_message(msg), TwistStamped)
    np.testing.assert_allclose(conv.control_from_twist(back, v, dt, params.wheelbase_m), u, atol=1e-12)
    assert back.twist.angular.z == pytest.approx(speed * math.tan(steer) / params.wheelbase_m)


def test_twist_at_standstill_keeps_the_last_steering(params):
    msg = conv.fill_twist(TwistStamped(), np.array([0.3, 0.0]), 0.0, params.wheelbase_m, conv.s_to_stamp(0.0), "b")
    u = conv.control_from_twist(msg, 0.0, 0.02, params.wheelbase_m, last_steer_rad=-0.1)
    assert u[U.STEER_CMD] == -0.1 and u[U.ACCEL] == 0.0


def test_path_and_candidate_messages():
    xy = np.stack([np.linspace(0, 3, 7), np.linspace(0, 3, 7) ** 2 / 3], axis=1)
    path = conv.path_msg(xy, conv.s_to_stamp(0.5), "map")
    assert len(path.poses) == 7 and path.header.frame_id == "map"
    got = np.array([[p.pose.position.x, p.pose.position.y] for p in path.poses])
    np.testing.assert_allclose(got, xy)
    yaw0 = 2 * math.atan2(path.poses[0].pose.orientation.z, path.poses[0].pose.orientation.w)
    assert yaw0 == pytest.approx(math.atan2(xy[1, 1] - xy[0, 1], xy[1, 0] - xy[0, 0]))
    cands = np.random.default_rng(1).normal(size=(4, 6, 2))
    markers = conv.candidates_msg(cands, conv.s_to_stamp(0.0), "map")
    points = np.array([[p.x, p.y] for p in markers.markers[0].points])
    assert points.shape == (4 * 5 * 2, 2)  # one segment per consecutive pair
    np.testing.assert_allclose(points[0], cands[0, 0]) and np.testing.assert_allclose(points[1], cands[0, 1])
    np.testing.assert_allclose(points[-1], cands[-1, -1])


def test_stamps_round_trip():
    for t in (0.0, 1.5, 1234.000000001, 59.999999999):
        stamp = conv.s_to_stamp(t)
        assert 0 <= stamp.nanosec < 1_000_000_000
        assert conv.stamp_to_s(stamp) == pytest.approx(t, abs=1e-9)


# ------------------------------------------------------------------ parameters
SPECS = (
    ParamSpec("rate_hz", 50.0, "rate", low=1.0, high=100.0),
    ParamSpec("mode", "a", "mode", choices=("a", "b")),
    ParamSpec("count", 3, "count", low=0),
    ParamSpec("flag", True, "flag"),
    ParamSpec("gain", 1.0, "gain", positive=True),
)


def _node(context, overrides: dict) -> Node:
    return Node("param_probe", context=context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])


def test_parameters_are_typed_described_and_coerced():
    with ros_context() as context:
        node = _node(context, {"rate_hz": 20, "mode": "b", "mppi.samples": 64, "mppi.cost.weight": 2.5})
        try:
            values = declare_params(node, SPECS)
            assert values == {"rate_hz": 20.0, "mode": "b", "count": 3, "flag": True, "gain": 1.0}
            assert isinstance(values["rate_hz"], float)
            descriptor = node.describe_parameter("rate_hz")
            assert descriptor.description == "rate" and descriptor.read_only and "[1.0, 100.0]" in descriptor.additional_constraints
            sections = declare_sections(node, ("mppi", "pure_pursuit"))
            assert sections == {"mppi": {"samples": 64, "cost": {"weight": 2.5}}, "pure_pursuit": {}}
            reject_unknown(node)  # everything given was declared
        finally:
            node.destroy_node()


@pytest.mark.parametrize("overrides, message", [
    ({"rate_hz": 0.5}, "outside"), ({"rate_hz": "fast"}, "must be a number"), ({"mode": "c"}, "not one of"),
    ({"count": 2.5}, "must be an integer"), ({"flag": 1}, "true/false"), ({"gain": 0.0}, "must be > 0"),
    ({"rate_hz": math.nan}, "finite"),
])
def test_bad_parameters_are_one_line_errors(overrides, message):
    with ros_context() as context:
        node = _node(context, overrides)
        try:
            with pytest.raises(MbrlError, match=message) as info:
                declare_params(node, SPECS)
            assert "param_probe: parameter" in str(info.value) and "\n" not in str(info.value)
        finally:
            node.destroy_node()


def test_unknown_parameters_are_rejected():
    with ros_context() as context:
        node = _node(context, {"rate_hz": 10.0, "rate_hzz": 10.0})
        try:
            declare_params(node, SPECS)
            with pytest.raises(MbrlError, match="unknown parameter 'rate_hzz'"):
                reject_unknown(node)
        finally:
            node.destroy_node()


def test_domain_ids_are_checked():
    assert check_domain_id(0) == 0 and check_domain_id(232) == 232
    for bad in (-1, 233, 1.0, True, "3"):
        with pytest.raises(MbrlError, match="domain id"):
            check_domain_id(bad)


# ------------------------------------------------------------------ loop statistics
def test_loop_stats_rate_percentiles_and_deadlines():
    stats = LoopStats(period_s=0.02, window=100, log_capacity=5)
    step = np.r_[np.full(98, 1.0), 30.0, 2.0]  # one step over the 20 ms deadline
    late = np.r_[np.zeros(99), 25.0]  # one command late because its tick came late
    for k in range(100):
        stats.record(0.02 * k, 10.0 + 0.02 * k, step[k], late[k], np.zeros(STATE_DIM), np.zeros(CONTROL_DIM), 0, False, k == 5)
    window = stats.window()
    assert window.rate_hz == pytest.approx(50.0) and window.samples == 100
    assert window.step_max_ms == 30.0 and window.step_p50_ms == 1.0
    assert window.step_p99_ms == pytest.approx(np.percentile(step, 99))
    assert stats.deadline_misses == 1 and stats.late_commands == 2 and stats.guarded_steps == 1
    assert stats.log_count == 5 and stats.log_step_ms[4] == 1.0


def test_achieved_rate_skips_the_warm_up():
    publish = np.r_[np.arange(0.0, 2.0, 0.1), 2.0 + np.arange(0, 400) * 0.02]  # 10 Hz start, then 50 Hz
    assert achieved_rate_hz(publish, skip_s=2.0) == pytest.approx(50.0)
    assert achieved_rate_hz(np.array([1.0])) == 0.0


# ------------------------------------------------------------------ files and docs
def test_file_parameters_resolve_in_the_share_directory(tmp_path, monkeypatch):
    from mbrl_control import share_dir
    from mbrl_control.ros.params import data_file, model_spec

    monkeypatch.chdir(tmp_path)
    assert data_file("") is None
    assert data_file("models/f1tenth_perturbed.yaml") == share_dir() / "models" / "f1tenth_perturbed.yaml"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "f1tenth_perturbed.yaml").write_text("x")
    assert data_file("models/f1tenth_perturbed.yaml").resolve() == tmp_path / "models" / "f1tenth_perturbed.yaml"  # cwd first
    assert data_file("nowhere.yaml").name == "nowhere.yaml"  # left for the loader to report
    assert model_spec("dynamic") == "dynamic" and model_spec("my.pt") == "my.pt"


def test_every_node_parameter_is_documented():
    from pathlib import Path

    from mbrl_control.ros import controller_node, sim_node, sysid_node

    doc = (Path(__file__).resolve().parent.parent / "docs" / "ros_interface.md").read_text()
    specs = [controller_node.controller_param(), *controller_node.PARAMS, *sim_node.PARAMS, *sysid_node.PARAMS]
    missing = sorted({spec.name for spec in specs if f"`{spec.name}`" not in doc})
    assert not missing, f"parameters missing from docs/ros_interface.md: {missing}"


def test_spinner_quiets_the_garbage_collector_and_restores_it():
    import gc

    from mbrl_control.ros.runtime import NO_FULL_COLLECTIONS, Spinner

    before = gc.get_threshold()
    with ros_context() as context:
        spinner = Spinner(context).start()
        try:
            assert gc.get_threshold()[2] == NO_FULL_COLLECTIONS and gc.get_freeze_count() > 0
        finally:
            spinner.stop(shutdown_context=False)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
