"""rosbag2 telemetry: typestore with ackermann_msgs, writing runs, reading recorded drives.

Uses the pure-Python ``rosbags`` library, so bags are written and read without a ROS install;
what it writes ``ros2 bag info/play`` reads. ackermann_msgs is registered from its .msg
definitions shipped in ``mbrl_control/msg_defs``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from mbrl_control import MbrlError
from mbrl_control.models.layout import S, U
from mbrl_control.models.odometry import quaternion_to_yaw, state_to_odometry

MSG_DEFS = Path(__file__).resolve().parent / "msg_defs"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
ACKERMANN_TYPE = "ackermann_msgs/msg/AckermannDriveStamped"
TWIST_TYPE = "geometry_msgs/msg/TwistStamped"
PATH_TYPE = "nav_msgs/msg/Path"

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
    sec = int(np.floor(t_s))
    return store.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=int(round((t_s - sec) * 1e9)) % 1_000_000_000)


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


class TelemetryWriter:
    """Writes odometry, commands and planned paths of a run to a rosbag2 (MCAP storage).

    ``path`` ending in ``.mcap`` gives a single MCAP file (rosbag2's storage file, which
    ``ros2 bag`` and ``rosbags`` open directly); any other path gives a bag directory with
    ``metadata.yaml``. Use as a context manager.
    """

    def __init__(self, path: str | Path, odom_topic: str = "/odom", drive_topic: str = "/drive",
                 path_topic: str = "/controller_node/optimal_path") -> None:
        self.path = Path(path)
        self.store = typestore()
        self._bag_dir = self.path.with_name(f".{self.path.stem}.bagdir") if self.path.suffix == ".mcap" else self.path
        if self._bag_dir.exists():
            shutil.rmtree(self._bag_dir)
        self._writer = Writer(self._bag_dir, version=9, storage_plugin=StoragePlugin.MCAP)
        self._topics = (odom_topic, drive_topic, path_topic)

    def __enter__(self) -> "TelemetryWriter":
        self._writer.open()
        odom, drive, plan = self._topics
        self._odom = self._writer.add_connection(odom, ODOMETRY_TYPE, typestore=self.store)
        self._drive = self._writer.add_connection(drive, ACKERMANN_TYPE, typestore=self.store)
        self._plan = self._writer.add_connection(plan, PATH_TYPE, typestore=self.store)
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()
        if self._bag_dir != self.path:
            (self._bag_dir / f"{self._bag_dir.name}.mcap").replace(self.path)
            shutil.rmtree(self._bag_dir)

    def _write(self, conn, t_s: float, msg, msgtype: str) -> None:
        self._writer.write(conn, int(round(t_s * 1e9)), self.store.serialize_cdr(msg, msgtype))

    def odometry(self, t_s: float, state: np.ndarray) -> None:
        self._write(self._odom, t_s, odometry_msg(self.store, t_s, state), ODOMETRY_TYPE)

    def command(self, t_s: float, control: np.ndarray, speed_mps: float) -> None:
        self._write(self._drive, t_s, ackermann_msg(self.store, t_s, control, speed_mps), ACKERMANN_TYPE)

    def planned_path(self, t_s: float, xy: np.ndarray) -> None:
        self._write(self._plan, t_s, path_msg(self.store, t_s, xy), PATH_TYPE)


def command_speed(state: np.ndarray, control: np.ndarray, dt_s: float) -> float:
    """The speed set-point sent with an acceleration command: where the speed will be after dt."""
    return float(state[S.V] + control[U.ACCEL] * dt_s)


@dataclass
class RecordedDrive:
    """Odometry and commands of a recording, as arrays in time order (seconds from the first message)."""

    odom_t_s: np.ndarray  # (N,)
    odom: np.ndarray  # (N, 6): x_m, y_m, yaw_rad (unwrapped), vx_body_mps, vy_body_mps, yaw_rate_radps
    cmd_t_s: np.ndarray  # (M,)
    cmd: np.ndarray  # (M, 2): steer_cmd_rad, accel_mps2 (layout of models.layout.U)
    cmd_speed_mps: np.ndarray  # (M,) speed set-point sent with the command
    t0_ns: int = 0


def read_drive(path: str | Path, odom_topic: str = "/odom", drive_topic: str = "/drive") -> RecordedDrive:
    """Read odometry (nav_msgs/Odometry) and commands (AckermannDriveStamped) from a bag or .mcap file."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise MbrlError(f"bag not found: {path}")
    odom_t, odom, cmd_t, cmd, speed = [], [], [], [], []
    try:
        with AnyReader([path], default_typestore=typestore()) as reader:
            conns = [c for c in reader.connections if c.topic in (odom_topic, drive_topic)]
            for conn, t_ns, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                if conn.topic == odom_topic:
                    p, q, tw = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist
                    odom_t.append(t_ns)
                    odom.append([p.x, p.y, quaternion_to_yaw(q.x, q.y, q.z, q.w), tw.linear.x, tw.linear.y, tw.angular.z])
                else:
                    d = msg.drive
                    cmd_t.append(t_ns)
                    cmd.append([d.steering_angle, d.acceleration])
                    speed.append(d.speed)
    except MbrlError:
        raise
    except Exception as exc:  # rosbags raises several types for damaged files
        raise MbrlError(f"{path}: cannot read bag: {exc}") from None
    if not odom_t:
        raise MbrlError(f"{path}: no odometry messages on '{odom_topic}'")
    t0 = min(odom_t[0], cmd_t[0]) if cmd_t else odom_t[0]
    odom_arr = np.asarray(odom, dtype=np.float64)
    odom_arr[:, 2] = np.unwrap(odom_arr[:, 2])
    return RecordedDrive(
        odom_t_s=(np.asarray(odom_t, dtype=np.int64) - t0) * 1e-9, odom=odom_arr,
        cmd_t_s=(np.asarray(cmd_t, dtype=np.int64) - t0) * 1e-9, cmd=np.asarray(cmd, dtype=np.float64).reshape(-1, 2),
        cmd_speed_mps=np.asarray(speed, dtype=np.float64), t0_ns=int(t0))
