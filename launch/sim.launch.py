"""Simulation: sim_node + controller_node + sysid_node on sim time.

sim_node steps the plant in (scaled) real time and publishes /clock; the controller and sysid
nodes run with ``use_sim_time`` so their timers, watchdog and stamps follow the simulator.
Parameters: ``config/sim.yaml`` (launch argument ``config``).

    ros2 launch mbrl_control sim.launch.py [config:=/path/to/params.yaml]
"""

import os
import tempfile

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def _model_env() -> dict[str, str]:
    """The folder shared by sysid_node (writes, announces) and controller_node (accepts only from there).

    One per launch unless $MBRL_MODEL_DIR is set; the per-run announcement key is created in it
    (or taken from $MBRL_MODEL_SECRET), see mbrl_control/ros/model_auth.py.
    """
    return {"MBRL_MODEL_DIR": os.environ.get("MBRL_MODEL_DIR") or tempfile.mkdtemp(prefix="mbrl_models_")}


def generate_launch_description() -> LaunchDescription:
    model_env = _model_env()
    config = LaunchConfiguration("config")
    default_config = PathJoinSubstitution([FindPackageShare("mbrl_control"), "config", "sim.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config, description="node parameters (ros__parameters YAML)"),
        Node(package="mbrl_control", executable="sim_node", name="sim_node", output="screen",
             parameters=[config]),
        Node(package="mbrl_control", executable="controller_node", name="controller_node", output="screen",
             parameters=[config, {"use_sim_time": True}], additional_env=model_env),
        Node(package="mbrl_control", executable="sysid_node", name="sysid_node", output="screen",
             parameters=[config, {"use_sim_time": True}], additional_env=model_env),
    ])
