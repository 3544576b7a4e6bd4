"""Drive a car in gz-sim with mbrl_control: ros_gz_bridge (+ the controller, by default).

    ros2 launch mbrl_control gazebo_bridge.launch.py [model_name:=f1tenth] [config_file:=FILE]
        [with_controller:=true] [controller_params:=FILE] [use_sim_time:=true]

Starts ros_gz_bridge's ``parameter_bridge`` with ``config/gz_bridge.yaml`` (TwistStamped
``cmd_vel`` -> gz ``/model/<model>/cmd_vel``, gz ``/model/<model>/odometry`` -> ``odom``,
gz ``/clock`` -> ``/clock``) and, unless ``with_controller:=false``, ``controller_node`` with
``command_type: twist`` on sim time. Gazebo itself (the world with the car, its
AckermannSteering and OdometryPublisher systems) is started separately; see docs/gazebo.md.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "mbrl_control"
DEFAULT_MODEL = "f1tenth"
BRIDGE_CONFIG = "gz_bridge.yaml"
MODEL_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"


def package_share() -> Path:
    """The installed share directory, or the repository root when run from a source checkout."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # not installed with colcon: the file sits in <repo>/launch/
        return Path(__file__).resolve().parent.parent


def rename_model(config_text: str, model_name: str) -> str:
    """The bridge configuration with every gz topic ``/model/f1tenth/...`` moved to ``model_name``."""
    if not re.fullmatch(MODEL_NAME_PATTERN, model_name):
        raise RuntimeError(f"gazebo_bridge: model_name '{model_name}' is not a valid gz topic name part")
    return config_text.replace(f"/model/{DEFAULT_MODEL}/", f"/model/{model_name}/")


def _is_true(context, name: str) -> bool:
    return LaunchConfiguration(name).perform(context).strip().lower() in ("true", "1", "yes")


BRIDGE_PACKAGE = "ros_gz_bridge"
MISSING_BRIDGE = ("gazebo_bridge: ROS 2 package 'ros_gz_bridge' not found (AMENT_PREFIX_PATH): install it with "
                  "'sudo apt install ros-$ROS_DISTRO-ros-gz-bridge' (or build github.com/gazebosim/ros_gz in your "
                  "workspace) and source its setup.bash; see docs/gazebo.md")


def require_bridge_package() -> None:
    """One line naming what is missing and how to install it, instead of launch_ros' 'package not found'."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:  # no ament index at all: launch_ros will fail on it anyway
        return
    try:
        get_package_prefix(BRIDGE_PACKAGE)
    except (PackageNotFoundError, EnvironmentError):
        raise RuntimeError(MISSING_BRIDGE) from None


def _bridge(context):
    """parameter_bridge on the configuration file, rewritten to a temporary file for another model name."""
    require_bridge_package()
    config = Path(LaunchConfiguration("config_file").perform(context))
    if not config.is_file():
        raise RuntimeError(f"gazebo_bridge: bridge configuration not found: {config}")
    model = LaunchConfiguration("model_name").perform(context)
    if model != DEFAULT_MODEL:
        with tempfile.NamedTemporaryFile("w", prefix="gz_bridge_", suffix=".yaml", delete=False) as out:
            out.write(rename_model(config.read_text(), model))
        config = Path(out.name)
    return [Node(package="ros_gz_bridge", executable="parameter_bridge", name="gz_bridge", output="screen",
                 parameters=[{"config_file": str(config), "use_sim_time": _is_true(context, "use_sim_time")}])]


def _controller(context):
    """controller_node publishing TwistStamped ``cmd_vel`` (what the bridge forwards) on sim time."""
    params = []
    extra = LaunchConfiguration("controller_params").perform(context)
    if extra:
        params.append(extra)
    params.append({"command_type": "twist", "use_sim_time": _is_true(context, "use_sim_time")})
    return [Node(package=PACKAGE, executable="controller_node", name="controller_node", output="screen",
                 parameters=params)]


def generate_launch_description() -> LaunchDescription:
    share = package_share()
    return LaunchDescription([
        DeclareLaunchArgument("model_name", default_value=DEFAULT_MODEL, description="name of the car's SDF model in gz-sim"),
        DeclareLaunchArgument("config_file", default_value=str(share / "config" / BRIDGE_CONFIG),
                              description="ros_gz_bridge YAML configuration"),
        DeclareLaunchArgument("use_sim_time", default_value="true", description="follow gz-sim's /clock"),
        DeclareLaunchArgument("with_controller", default_value="true", description="also start controller_node"),
        DeclareLaunchArgument("controller_params", default_value="",
                              description="controller_node parameter YAML (command_type is forced to twist)"),
        OpaqueFunction(function=_bridge),
        OpaqueFunction(function=_controller, condition=IfCondition(LaunchConfiguration("with_controller"))),
    ])
