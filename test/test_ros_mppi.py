"""controller_node with the real MPPI controller on sim_node: plan, candidates, a semi-parametric hot swap."""

from __future__ import annotations

import json

import numpy as np

from test_ros_support import ros_context, spinning, wait_until

from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from mbrl_control.ros import model_auth, qos  # noqa: E402
from mbrl_control.ros.controller_node import ControllerNode  # noqa: E402
from mbrl_control.ros.sim_node import SimNode  # noqa: E402

SAMPLES, HORIZON, SHOWN = 64, 12, 8


def test_mppi_drives_publishes_candidates_and_hot_swaps(params, tmp_path):
    from mbrl_control.models.semiparametric import physics_only

    model_file = physics_only(params.replace(cornering_stiffness_front=4.0), 0.02).save(tmp_path / "model_v001.pt")
    with ros_context() as context:
        sim = SimNode(context=context)
        node = ControllerNode(context=context, parameter_overrides=[
            Parameter("controller", value="mppi"), Parameter("mppi.samples", value=SAMPLES),
            Parameter("mppi.horizon", value=HORIZON), Parameter("mppi.smoothing_window", value=5),
            Parameter("candidates_max", value=SHOWN), Parameter("path_rate_hz", value=20.0),
            Parameter("model_dir", value=str(tmp_path))])
        viewer = Node("viewer", context=context)
        markers: list[MarkerArray] = []
        viewer.create_subscription(MarkerArray, "/controller_node/candidates", markers.append, qos.VISUALIZATION)
        announce = viewer.create_publisher(String, "model_updates", qos.MODEL_UPDATES)
        with spinning(context, [sim, node, viewer]):
            assert wait_until(lambda: len(markers) >= 3 and sim.measured[3] > 1.0)
            points = np.array([[p.x, p.y] for p in markers[-1].markers[0].points])
            assert points.shape == (SHOWN * (HORIZON - 1) * 2, 2) and np.all(np.isfinite(points))
            car = sim.measured[:2]
            assert np.min(np.linalg.norm(points - car, axis=1)) < 1.0  # the candidates start at the car
            announce.publish(String(data=json.dumps(model_auth.announcement(model_auth.run_secret(tmp_path), 1, model_file))))
            assert wait_until(lambda: node.model_swaps == 1)
            assert node.controller.model.params.cornering_stiffness_front == 4.0
            steps = node.stats.steps
            assert wait_until(lambda: node.stats.steps >= steps + 25)
            assert node._faults == 0 and node.stats.guarded_steps == 0
        assert sim.measured[3] > 1.0  # still driving after the swap
