"""controller_node parameters at run time (in one process): checked like at start-up, applied between two steps.

The node is built with the real MPPI controller; changes go through ``Node.set_parameters`` (the
pre-set and on-set callbacks that the parameter service of ``ros2 param set`` calls). The real
CLI against a launched node is in test_launch_run.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from mbrl_control.sim.plant import initial_state_at
from test_ros_support import ros_context

from rclpy.parameter import Parameter  # noqa: E402

from mbrl_control.ros.controller_node import ControllerNode  # noqa: E402

OVERRIDES = {"controller": "mppi", "model": "dynamic", "warmup_steps": 0, "accept_models": False,
             "mppi.samples": 128, "mppi.horizon": 30, "mppi.cost.progress_weight": 20}


@pytest.fixture(scope="module")
def node():
    with ros_context() as context:
        node = ControllerNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in OVERRIDES.items()])
        try:
            yield node
        finally:
            node.destroy_node()


def _set(node, name, value):
    return node.set_parameters([Parameter(name, value=value)])[0]


def _state(node, speed):
    x, y, yaw = node.track.start_pose()
    return initial_state_at(x, y, yaw, speed, node.params)


def test_every_option_of_the_running_controller_is_a_parameter(node):
    assert node.get_parameter("mppi.cost.progress_weight").value == 20  # from the overrides (integer literal)
    assert node.get_parameter("mppi.temperature").value == pytest.approx(1.3)  # a default, declared too
    assert node.get_parameter("mppi.cost.speed_max_mps").value == pytest.approx(12.0)
    describe = node.describe_parameter("mppi.backend")
    assert "fixed at start-up" in describe.description
    assert "can change at run time" in node.describe_parameter("mppi.temperature").description


def test_a_cost_weight_is_applied_at_the_next_step_and_keeps_the_warm_start(node):
    old = node.controller
    old.step(_state(node, 3.0))
    result = _set(node, "mppi.cost.progress_weight", 30)  # an integer, as `ros2 param set ... 30` sends it
    assert result.successful, result.reason
    assert node.get_parameter("mppi.cost.progress_weight").value == 30.0
    assert node.controller is old and old.cost_config.progress_weight == 20.0  # not in the middle of anything
    node._apply_pending(0)  # what the next tick does first
    new = node.controller
    assert new is not old and new.cost_config.progress_weight == 30.0
    assert new.cost_config.speed_max_mps == old.cost_config.speed_max_mps  # the other options kept
    np.testing.assert_array_equal(new.U, old.U)  # warm start carried over
    assert node.options["mppi"]["cost"]["progress_weight"] == 30.0
    assert node.param_updates >= 1 and node.runtime_params["mppi.cost.progress_weight"] == 30.0


def test_a_change_changes_the_commands(node):
    state = _state(node, 6.0)
    before = node.controller
    accel_before = [before.step(state)[1] for _ in range(5)][-1]
    assert _set(node, "mppi.cost.speed_max_mps", 1.0).successful
    node._apply_pending(0)
    assert node.controller is not before
    accel_after = [node.controller.step(state)[1] for _ in range(5)][-1]
    assert accel_before > -1.0 and accel_after < -2.0, (accel_before, accel_after)  # 6 m/s over a 1 m/s cap: brake
    assert _set(node, "mppi.cost.speed_max_mps", 12.0).successful
    node._apply_pending(0)


@pytest.mark.parametrize("name, value, reason", [
    ("mppi.temperature", -1.0, "temperature"),
    ("mppi.samples", 0, "samples"),
    ("mppi.samples", 12.5, "integer"),
    ("mppi.cost.progress_weight", "fast", "number"),
    ("mppi.backend", "torch", "fixed at start-up"),
    ("rate_hz", 20.0, "fixed at start-up"),
    ("controller", "ilqr", "fixed at start-up"),
    ("odom_timeout_s", -0.5, "must be > 0"),
])
def test_invalid_or_fixed_values_are_refused_with_a_reason(node, name, value, reason):
    controller, before = node.controller, node.get_parameter(name).value
    rejections = node.param_rejections
    result = _set(node, name, value)
    assert not result.successful and reason in result.reason, result.reason
    assert node.get_parameter(name).value == before
    node._apply_pending(0)
    assert node.controller is controller and node.param_rejections == rejections + 1


def test_a_node_parameter_that_may_change(node):
    assert _set(node, "odom_timeout_s", 1).successful  # integer for a float, as at start-up
    assert node.cfg["odom_timeout_s"] == 0.2  # until the next step
    node._apply_pending(0)
    assert node.cfg["odom_timeout_s"] == 1.0
    assert _set(node, "odom_timeout_s", 0.2).successful
    node._apply_pending(0)


def test_pure_pursuit_options_change_too():
    with ros_context() as context:
        node = ControllerNode(context=context, parameter_overrides=[Parameter("controller", value="pure_pursuit"),
                                                                   Parameter("warmup_steps", value=0)])
        try:
            assert node.get_parameter("pure_pursuit.set_speed_mps").value == pytest.approx(5.0)  # declared default
            assert _set(node, "pure_pursuit.set_speed_mps", 3).successful
            node._apply_pending(0)
            assert node.controller.config.set_speed_mps == 3.0
            assert not node.has_parameter("mppi.temperature")  # options of controllers that do not run: undeclared
            refused = _set(node, "pure_pursuit.set_speed_mps", -2.0)
            assert not refused.successful and "set_speed_mps" in refused.reason, refused.reason
        finally:
            node.destroy_node()
