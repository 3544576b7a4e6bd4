"""sysid_node over DDS: observations from odometry + commands, versioned model files, latched announcements,
and the controller's hot swap of what sysid_node announced.

The refit itself (mbrl_control.sysid.online) is tested by its owner; here a recording stand-in with
the same protocol hands out one model, so the test checks this node's plumbing exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mbrl_control.models.layout import S, U
from mbrl_control.models.semiparametric import SemiParametricModel, physics_only
from mbrl_control.sim.plant import initial_state_at
from test_ros_controller import PROBE_U, ProbeController, _controller, probe_registered  # noqa: F401 (fixture)
from test_ros_support import FakeOdometry, ros_context, spinning, wait_until

from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from mbrl_control.ros import qos  # noqa: E402
from mbrl_control.ros.sysid_node import SysidNode  # noqa: E402

HAND_OUT_AFTER = 40


class StandInUpdater:
    """The OnlineModelUpdater protocol: records observations, returns one model after a while."""

    def __init__(self, model, params, dt_s, options) -> None:
        self.options = dict(options)
        self.dt_s = dt_s
        self.observed: list[tuple[float, np.ndarray, np.ndarray]] = []
        self.model = physics_only(params.replace(friction_coeff=0.9), dt_s)
        self.model.metrics = {"rmse_candidate_m": 0.01, "note": "stand-in"}
        self.handed_out = False
        self.closed = False

    def observe(self, t_s, state, control) -> None:
        self.observed.append((t_s, np.array(state), np.array(control)))

    def poll_new_model(self):
        if not self.handed_out and len(self.observed) >= HAND_OUT_AFTER:
            self.handed_out = True
            return self.model
        return None

    def close(self) -> None:
        self.closed = True


@pytest.fixture()
def stand_in(monkeypatch):
    import mbrl_control.sysid.online as online

    made: list[StandInUpdater] = []

    def factory(model, params, dt_s, options):
        made.append(StandInUpdater(model, params, dt_s, options))
        return made[-1]

    monkeypatch.setattr(online, "make_online_updater", factory)
    return made


def test_sysid_node_observes_announces_and_the_controller_swaps(params, tmp_path, stand_in, probe_registered):
    start = initial_state_at(1.0, 2.0, 0.4, 2.5, params)
    with ros_context() as context:
        odom = FakeOdometry(context, start)
        controller = _controller(context, model_dir=str(tmp_path / "models"))  # accepts only sysid's signed files
        sysid = SysidNode(context=context, parameter_overrides=[
            Parameter("out_dir", value=str(tmp_path / "models")), Parameter("sysid.first_refit_s", value=3.0)])
        updater = stand_in[0]
        assert updater.options["first_refit_s"] == 3.0 and updater.options["deterministic"] is False
        assert updater.options["out_dir"] == str(tmp_path / "models" / "refits")
        with spinning(context, [odom, controller, sysid]):
            assert wait_until(lambda: sysid.version == 1 and controller.model_version == 1)
            probe: ProbeController = controller.controller
            assert isinstance(probe.model, SemiParametricModel)
            assert probe.model.params.friction_coeff == pytest.approx(0.9)
            late = Node("late_listener", context=context)  # joins after the announcement: still gets it
            heard: list[String] = []
            late.create_subscription(String, "model_updates", heard.append, qos.MODEL_UPDATES)
            from rclpy.executors import SingleThreadedExecutor

            executor = SingleThreadedExecutor(context=context)
            executor.add_node(late)
            for _ in range(200):
                executor.spin_once(timeout_sec=0.05)
                if heard:
                    break
            executor.shutdown()
            late.destroy_node()
            assert updater.closed is False
        assert updater.closed is True  # tearing the node down stops the refit worker
    info = json.loads(heard[0].data)
    assert info["version"] == 1 and info["metrics"] == {"rmse_candidate_m": 0.01, "note": "stand-in"}
    path = Path(info["path"])
    assert path == (tmp_path / "models" / "model_v001.pt").resolve()
    assert len(info["sha256"]) == 64 and len(info["hmac"]) == 64
    assert json.loads(path.with_suffix(".json").read_text())["version"] == 1
    assert SemiParametricModel.load(path).params.friction_coeff == pytest.approx(0.9)
    # observations: the odometry state, the servo estimate of the steering, the command as sent
    t, states, controls = zip(*updater.observed)
    states, controls = np.array(states), np.array(controls)
    assert np.all(np.diff(t) > 0)
    for index in (S.X, S.Y, S.V, S.YAW):
        np.testing.assert_allclose(states[:, index], start[index], atol=1e-9)
    probe_rows = np.all(controls == PROBE_U.astype(np.float32), axis=1)
    stop_rows = np.all(controls == 0.0, axis=1)  # the controller's safe stop before its first odometry
    assert np.all(probe_rows | stop_rows) and probe_rows.sum() >= HAND_OUT_AFTER - 5 and probe_rows[-1]
    assert states[-1, S.STEER] == pytest.approx(PROBE_U[U.STEER_CMD], abs=1e-4)  # the servo has settled on the command
    assert np.all(np.diff(states[:10, S.STEER]) >= 0)


def test_sysid_node_learns_from_the_controls_a_miscalibrated_car_applied(params, tmp_path, stand_in):
    """The same actuator models as controller_node: with ``actuator_calibration: identify`` sysid_node
    identifies the steering map, dead time and throttle dead zone from the telemetry, and hands its
    refit the controls the car applied (mapped, delayed), not the commands on the wire."""
    from test_ros_speed_interface import assert_identified, calibration_adopted, miscalibrated_car

    with ros_context() as context:
        sim, controller = miscalibrated_car(context)
        sysid = SysidNode(context=context, parameter_overrides=[
            Parameter("out_dir", value=str(tmp_path / "models")), Parameter("actuator_calibration", value="identify")])
        applied = sysid._applied
        calls: list[tuple[np.ndarray, np.ndarray]] = []
        convert = applied.applied
        applied.applied = lambda wire: calls.append((np.array(wire), convert(wire))) or calls[-1][1]
        with spinning(context, [sim, controller, sysid]):
            assert wait_until(lambda: calibration_adopted(applied.terms, lambda: applied.dead_time_s, params),
                              timeout_s=40.0), sysid._actuator_id.estimates
            seen = len(stand_in[0].observed)
            assert wait_until(lambda: len(stand_in[0].observed) >= seen + 20)
    assert_identified(applied.terms, applied.dead_time_s, params)
    # the refit was handed the converted controls, and after identification they are not the wire's
    observed = np.array([c for _, _, c in stand_in[0].observed])
    converted = np.array([out for _, out in calls])
    assert any(np.array_equal(observed[-1], out) for out in converted[-5:])
    late = [(wire, out) for wire, out in calls[-20:]]
    assert all(abs(out[U.ACCEL]) < abs(wire[U.ACCEL]) or wire[U.ACCEL] == 0.0 for wire, out in late if abs(wire[U.ACCEL]) < 9.0)
    assert any(abs(out[U.STEER_CMD] - wire[U.STEER_CMD]) > 1e-3 for wire, out in late)
