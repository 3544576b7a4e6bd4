"""On the F1TENTH car (or the f1tenth_gym ROS bridge): controller_node + sysid_node.

Remaps for the F1TENTH stack: ``odom`` -> ``/ego_racecar/odom``; commands stay on ``/drive``
(AckermannDriveStamped, what the VESC driver / gym bridge listen to). Wall-clock time.
Parameters: ``config/car.yaml`` (launch argument ``config``).

    ros2 launch mbrl_control car.launch.py [config:=/path/to/params.yaml]
"""

import os
import tempfile

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

F1TENTH_REMAPS = [("odom", "/ego_racecar/odom"), ("drive", "/drive")]


def _model_env() -> dict[str, str]:
    """The folder shared by sysid_node (writes, announces) and controller_node (accepts only from there).

    One per launch unless $MBRL_MODEL_DIR is set; the per-run announcement key is created in it
    (or taken from $MBRL_MODEL_SECRET), see mbrl_control/ros/model_auth.py.
    """
    return {"MBRL_MODEL_DIR": os.environ.get("MBRL_MODEL_DIR") or tempfile.mkdtemp(prefix="mbrl_models_")}


def generate_launch_description() -> LaunchDescription:
    model_env = _model_env()
    config = LaunchConfiguration("config")
    default_config = PathJoinSubstitution([FindPackageShare("mbrl_control"), "config", "car.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config, description="node parameters (ros__parameters YAML)"),
        Node(package="mbrl_control", executable="controller_node", name="controller_node", output="screen",
             parameters=[config], remappings=F1TENTH_REMAPS, additional_env=model_env),
        Node(package="mbrl_control", executable="sysid_node", name="sysid_node", output="screen",
             parameters=[config], remappings=F1TENTH_REMAPS, additional_env=model_env),
    ])
