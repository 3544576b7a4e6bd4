"""rosbag2 telemetry: typestore with ackermann_msgs, writing runs, reading recorded drives.

Uses the pure-Python ``rosbags`` library, so bags are written and read without a ROS install;
what it writes ``ros2 bag info/play`` reads. By concern: :mod:`.messages` (typestore and
message conversion), :mod:`.writer` (runs as MCAP), :mod:`.reader` (recorded drives as clean
arrays, the CLI's bag flags), :mod:`.storage` (opening bag directories and files) and
:mod:`.mcap_recovery` (the valid prefix of damaged MCAP). Warnings go to the logger
``mbrl_control.bag``.
"""

from mbrl_control.bag.messages import (ACKERMANN_TYPE, ACKERMANN_UNSTAMPED_TYPE, COMMAND_TYPES, MSG_DEFS, ODOMETRY_TYPE,
                                       PATH_TYPE, TWIST_TYPE, TWIST_UNSTAMPED_TYPE, ackermann_msg, msg_definition,
                                       odometry_msg, path_msg, typestore)
from mbrl_control.bag.reader import (DEFAULT_DRIVE_TOPICS, DEFAULT_ODOM_TOPIC, DriveReadConfig, RecordedDrive,
                                     accel_from_speed_setpoint, add_bag_arguments, drive_read_config, read_drive,
                                     twist_to_steering)
from mbrl_control.bag.writer import TelemetryWriter, command_speed

__all__ = [
    "ACKERMANN_TYPE", "ACKERMANN_UNSTAMPED_TYPE", "COMMAND_TYPES", "DEFAULT_DRIVE_TOPICS", "DEFAULT_ODOM_TOPIC", "MSG_DEFS",
    "ODOMETRY_TYPE", "PATH_TYPE", "TWIST_TYPE", "TWIST_UNSTAMPED_TYPE", "DriveReadConfig", "RecordedDrive",
    "TelemetryWriter", "accel_from_speed_setpoint", "ackermann_msg", "add_bag_arguments", "command_speed",
    "drive_read_config", "msg_definition", "odometry_msg", "path_msg", "read_drive", "twist_to_steering", "typestore",
]
