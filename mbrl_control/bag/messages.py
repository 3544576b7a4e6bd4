"""Message conversion for rosbag2: the typestore (ROS 2 Jazzy plus ackermann_msgs) and our messages.

ackermann_msgs is registered from its .msg definitions shipped in ``mbrl_control/msg_defs``, so
bags are written and read without a ROS install.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from mbrl_control.models.layout import U
from mbrl_control.models.odometry import state_to_odometry

MSG_DEFS = Path(__file__).resolve().parent.parent / "msg_defs"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
ACKERMANN_TYPE = "ackermann_msgs/msg/AckermannDriveStamped"
TWIST_TYPE = "geometry_msgs/msg/TwistStamped"
PATH_TYPE = "nav_msgs/msg/Path"
ACKERMANN_UNSTAMPED_TYPE = "ackermann_msgs/msg/AckermannDrive"
TWIST_UNSTAMPED_TYPE = "geometry_msgs/msg/Twist"
COMMAND_TYPES = {ACKERMANN_TYPE: "ackermann", ACKERMANN_UNSTAMPED_TYPE: "ackermann",
                 TWIST_TYPE: "twist", TWIST_UNSTAMPED_TYPE: "twist"}
"""Command message types :func:`read_drive` understands, and their kind."""

_TYPESTORE = None


def msg_definition(msgtype: str) -> str:
    """The .msg text of a message type shipped in msg_defs (e.g. ackermann_msgs/msg/AckermannDrive)."""
    pkg, _, name = msgtype.split("/")
    return (MSG_DEFS / pkg / "msg" / f"{name}.msg").read_text()


def typestore():
    """ROS 2 (Jazzy) typestore with ackermann_msgs registered; built once."""
    global _TYPESTORE
    if _TYPESTORE is None:
        store = get_typestore(Stores.ROS2_JAZZY)
        types = {}
        for name in ("AckermannDrive", "AckermannDriveStamped"):
            msgtype = f"ackermann_msgs/msg/{name}"
            types.update(get_types_from_msg(msg_definition(msgtype), msgtype))
        store.register(types)
        _TYPESTORE = store
    return _TYPESTORE


def _stamp(store, t_s: float):
    """builtin_interfaces/Time of ``t_s`` rounded to the nanosecond (sec and nanosec carried together)."""
    sec, nanosec = divmod(int(round(t_s * 1e9)), 1_000_000_000)
    return store.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)


def _header(store, t_s: float, frame_id: str):
    return store.types["std_msgs/msg/Header"](stamp=_stamp(store, t_s), frame_id=frame_id)


def _pose(store, x: float, y: float, qz: float, qw: float):
    t = store.types
    return t["geometry_msgs/msg/Pose"](
        position=t["geometry_msgs/msg/Point"](x=x, y=y, z=0.0),
        orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=qz, w=qw),
    )


def odometry_msg(store, t_s: float, state: np.ndarray, frame_id: str = "map", child_frame_id: str = "base_link"):
    t = store.types
    o = state_to_odometry(state)
    vec = t["geometry_msgs/msg/Vector3"]
    twist = t["geometry_msgs/msg/Twist"](linear=vec(x=o["vx_body_mps"], y=o["vy_body_mps"], z=0.0),
                                         angular=vec(x=0.0, y=0.0, z=o["yaw_rate_radps"]))
    return t[ODOMETRY_TYPE](
        header=_header(store, t_s, frame_id), child_frame_id=child_frame_id,
        pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=_pose(store, o["x_m"], o["y_m"], o["qz"], o["qw"]), covariance=np.zeros(36)),
        twist=t["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)),
    )


def ackermann_msg(store, t_s: float, control: np.ndarray, speed_mps: float, frame_id: str = "base_link"):
    t = store.types
    drive = t["ackermann_msgs/msg/AckermannDrive"](
        steering_angle=float(control[U.STEER_CMD]), steering_angle_velocity=0.0, speed=float(speed_mps),
        acceleration=float(control[U.ACCEL]), jerk=0.0)
    return t[ACKERMANN_TYPE](header=_header(store, t_s, frame_id), drive=drive)


def path_msg(store, t_s: float, xy: np.ndarray, frame_id: str = "map"):
    t = store.types
    header = _header(store, t_s, frame_id)
    poses = [t["geometry_msgs/msg/PoseStamped"](header=header, pose=_pose(store, float(x), float(y), 0.0, 1.0)) for x, y in xy]
    return t[PATH_TYPE](header=header, poses=poses)
