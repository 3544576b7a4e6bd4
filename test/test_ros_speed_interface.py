"""controller_node on a speed-following sim_node (the F1TENTH driver) over real DDS: the node publishes
speed set-points that make the driver's loop give the planned acceleration, with gains it identifies."""

from __future__ import annotations

from test_ros_support import ros_context, spinning, wait_until

from rclpy.parameter import Parameter  # noqa: E402

from mbrl_control.control.command_interface import f1tenth_speed_actuation  # noqa: E402
from mbrl_control.ros.controller_node import ControllerNode  # noqa: E402
from mbrl_control.ros.sim_node import SimNode  # noqa: E402


def test_speed_interface_identifies_the_driver_and_drives(params):
    truth = f1tenth_speed_actuation(params)
    with ros_context() as context:
        sim = SimNode(context=context, parameter_overrides=[Parameter("actuation", value="speed")])
        node = ControllerNode(context=context, parameter_overrides=[
            Parameter("controller", value="pure_pursuit"), Parameter("command_interface", value="speed")])
        with spinning(context, [sim, node]):
            # identified from the first periods of speeding up; then the car drives on
            assert wait_until(lambda: "speed_gain_up_per_s" in node._actuator_id.estimates, timeout_s=30.0)
            assert wait_until(lambda: sim.measured[3] > 1.0, timeout_s=30.0)
            steps = node.stats.steps
            assert wait_until(lambda: node.stats.steps >= steps + 50)
            assert node.stale_input_steps == 0 and node._faults == 0, (node.stale_input_steps, node._faults)
            assert sim.measured[3] > 1.0
        gain_up = node._interface.gain_up_per_s
        assert abs(gain_up - truth.speed_gain_up_per_s) < 0.15 * truth.speed_gain_up_per_s, gain_up


def miscalibrated_car(context):
    """(sim_node on the miscalibrated plant, controller_node identifying the calibration)."""
    sim = SimNode(context=context, parameter_overrides=[Parameter("actuation", value="miscalibrated")])
    node = ControllerNode(context=context, parameter_overrides=[
        Parameter("controller", value="pure_pursuit"), Parameter("actuator_calibration", value="identify")])
    return sim, node


def calibration_adopted(terms, dead_time_s, params) -> bool:
    """Whether the dead time, the dead zone and the left gain have left their nominal values."""
    return dead_time_s() > 0.0 and terms.throttle_dead_zone > 0.0 and terms.steer_gain_left_rad != params.steer_max_rad


def assert_identified(terms, dead_time_s: float, params) -> None:
    """The identified terms against the miscalibrated plant's (tolerances of a live run's telemetry)."""
    from mbrl_control.control.command_interface import calibration_terms, miscalibrated_actuation

    truth = miscalibrated_actuation(params)
    true_terms = calibration_terms(truth, params)
    assert abs(dead_time_s - truth.steer_dead_time_s) < 0.015, dead_time_s
    assert abs(terms.steer_gain_left_rad - true_terms.steer_gain_left_rad) < 0.05 * true_terms.steer_gain_left_rad
    assert abs(terms.steer_offset_rad - true_terms.steer_offset_rad) < 0.01
    assert abs(terms.throttle_dead_zone - truth.throttle_dead_zone) < 0.03


def test_miscalibrated_actuators_identified_by_the_node(params):
    """controller_node with ``actuator_calibration: identify`` on a sim_node whose steering map, dead
    time and throttle differ from the nominal: it identifies them from its own telemetry and adopts them."""
    with ros_context() as context:
        sim, node = miscalibrated_car(context)
        with spinning(context, [sim, node]):
            assert node._actuator_id is not None and not node._actuator_id.speed_loop
            iface = node._interface
            assert wait_until(lambda: calibration_adopted(iface.calibration, lambda: iface.dead_time_s, params),
                              timeout_s=40.0), node._actuator_id.estimates
            assert node.stale_input_steps == 0 and node._faults == 0, (node.stale_input_steps, node._faults)
    assert_identified(iface.calibration, iface.dead_time_s, params)
