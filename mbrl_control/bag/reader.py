"""rosbag2 telemetry: typestore with ackermann_msgs, writing runs, reading recorded drives.

Uses the pure-Python ``rosbags`` library, so bags are written and read without a ROS install;
what it writes ``ros2 bag info/play`` reads. ackermann_msgs is registered from its .msg
definitions shipped in ``mbrl_control/msg_defs``.

Reading (:func:`read_drive`) accepts rosbag2 directories (MCAP or sqlite3 storage, with or
without ``metadata.yaml``) and bare ``.mcap`` / ``.db3`` files. Message types are taken from
the bag's own definitions when it has them (custom or differing types decode as recorded),
else from the built-in typestore. What it does with imperfect recordings (docs/tuning.md):

* stamps: header stamps (receive time for a topic whose stamps are mostly zero); messages are
  sorted by stamp, duplicate stamps keep the last message received, non-finite ones are dropped,
  odometry gaps longer than ``max_gap_s`` are listed in ``RecordedDrive.gaps_s``; each of these
  is a warning (logger ``mbrl_control.bag`` and ``RecordedDrive.warnings``);
* commands: ``AckermannDrive[Stamped]`` or ``Twist[Stamped]``; twist commands become a steering
  angle through the kinematic relation ``steer = atan(L * wz / v)``; a speed-only command stream
  (acceleration fields all zero, or twist) gets its acceleration from the speed set-point
  ``accel = (speed_cmd - v_odom) / command_period`` (the inverse of :func:`command_speed`);
* no command topic: odometry only, with a warning (``cmd_type == "none"``);
* truncated or damaged MCAP: the records before the damage are recovered (also the complete
  records of a cut-off uncompressed or zstd chunk) with a warning; a file with no recoverable
  odometry, or that is no bag at all, is an :class:`MbrlError`; a damaged sqlite3 bag keeps the
  messages read before the failure.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

from mbrl_control import MbrlError
from mbrl_control.models.layout import S, U
from mbrl_control.models.odometry import quaternion_to_yaw, state_to_odometry

MSG_DEFS = Path(__file__).resolve().parent / "msg_defs"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
ACKERMANN_TYPE = "ackermann_msgs/msg/AckermannDriveStamped"
TWIST_TYPE = "geometry_msgs/msg/TwistStamped"
PATH_TYPE = "nav_msgs/msg/Path"
ACKERMANN_UNSTAMPED_TYPE = "ackermann_msgs/msg/AckermannDrive"
TWIST_UNSTAMPED_TYPE = "geometry_msgs/msg/Twist"
COMMAND_TYPES = {ACKERMANN_TYPE: "ackermann", ACKERMANN_UNSTAMPED_TYPE: "ackermann",
                 TWIST_TYPE: "twist", TWIST_UNSTAMPED_TYPE: "twist"}
"""Command message types :func:`read_drive` understands, and their kind."""
DEFAULT_ODOM_TOPIC = "/odom"
DEFAULT_DRIVE_TOPICS = ("/drive", "/cmd_vel")
LOG = logging.getLogger("mbrl_control.bag")

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


# --------------------------------------------------------------------------------------------
# Reading recorded drives
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DriveReadConfig:
    """How :func:`read_drive` picks topics and cleans the recording (build with ``dataclass_from_dict``)."""

    odom_topic: str = ""  # nav_msgs/Odometry topic; "": /odom, else the only odometry topic
    drive_topic: str = ""  # command topic; "": /drive or /cmd_vel, else the only command topic
    time_source: str = "header"  # header: message stamps (receive time if mostly zero) | receive: bag time
    accel_source: str = "auto"  # auto: the acceleration field unless all zero | field | speed (from set-point)
    max_gap_s: float = 0.1  # odometry further apart than this is reported as a gap
    twist_min_speed_mps: float = 0.1  # below this the twist steering is held (atan(L wz / v) undefined)

    def validate(self) -> None:
        if self.time_source not in ("header", "receive"):
            raise MbrlError(f"bag: time_source must be header or receive, got {self.time_source!r}")
        if self.accel_source not in ("auto", "field", "speed"):
            raise MbrlError(f"bag: accel_source must be auto, field or speed, got {self.accel_source!r}")
        if not self.max_gap_s > 0 or not self.twist_min_speed_mps > 0:
            raise MbrlError("bag: max_gap_s and twist_min_speed_mps must be positive")


@dataclass
class RecordedDrive:
    """Odometry and commands of a recording, as arrays in time order (seconds from the first message).

    Stamps are strictly increasing within each stream (sorted, duplicates removed).
    """

    odom_t_s: np.ndarray  # (N,)
    odom: np.ndarray  # (N, 6): x_m, y_m, yaw_rad (unwrapped), vx_body_mps, vy_body_mps, yaw_rate_radps
    cmd_t_s: np.ndarray  # (M,)
    cmd: np.ndarray  # (M, 2): steer_cmd_rad, accel_mps2 (layout of models.layout.U)
    cmd_speed_mps: np.ndarray  # (M,) speed set-point sent with the command
    t0_ns: int = 0
    odom_topic: str = DEFAULT_ODOM_TOPIC
    cmd_topic: str | None = "/drive"  # None: the bag has no command topic
    cmd_type: str = "ackermann"  # ackermann | twist | none
    accel_from_speed: bool = False  # cmd[:, ACCEL] derived from the speed set-points
    gaps_s: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (G, 2) odometry gaps [start, end]
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False  # only a valid prefix of a damaged file was read

    @property
    def has_commands(self) -> bool:
        return len(self.cmd_t_s) > 0

    @property
    def duration_s(self) -> float:
        return float(self.odom_t_s[-1] - self.odom_t_s[0]) if len(self.odom_t_s) else 0.0

    def odom_speed_mps(self) -> np.ndarray:
        """Signed speed of the centre of gravity (``hypot(vx, vy)``, negative when reversing)."""
        speed = np.hypot(self.odom[:, 3], self.odom[:, 4])
        return np.where(self.odom[:, 3] >= 0, speed, -speed)


@dataclass
class _BagContents:
    """Raw messages of the selected topics, with what is needed to decode them."""

    topics: dict[str, str]  # every topic of the bag -> message type
    messages: dict[str, list[tuple[int, bytes]]]  # selected topic -> (bag receive time ns, CDR bytes)
    store: Any
    problems: list[str]
    truncated: bool = False


def read_drive(path: str | Path, odom_topic: str | None = None, drive_topic: str | None = None,
               config: DriveReadConfig | None = None, params=None) -> RecordedDrive:
    """Read odometry (nav_msgs/Odometry) and commands (AckermannDrive[Stamped] or Twist[Stamped]).

    ``path``: a rosbag2 directory (MCAP or sqlite3) or a bare ``.mcap`` / ``.db3`` file.
    ``odom_topic`` / ``drive_topic`` override ``config``'s topics. ``params`` (VehicleParams,
    default vehicle if None) give the wheelbase and steering limits for twist commands.
    Raises :class:`MbrlError` for a missing, unreadable or odometry-free recording.
    """
    config = config or DriveReadConfig()
    config.validate()
    odom_topic = odom_topic or config.odom_topic or None
    drive_topic = drive_topic or config.drive_topic or None
    path = Path(path)
    chosen: dict[str, str | None] = {}

    def select(topics: dict[str, str]) -> set[str]:
        chosen["odom"] = _pick_odom_topic(path, topics, odom_topic)
        chosen["cmd"] = _pick_command_topic(path, topics, drive_topic)
        return {t for t in chosen.values() if t is not None}

    contents = _load_bag(path, select)
    problems = list(contents.problems)
    odom_t, odom = _decode_odometry(contents, chosen["odom"], config, problems)
    cmd_topic = chosen["cmd"]
    cmd_t, cmd_rows, kind = np.zeros(0, dtype=np.int64), np.zeros((0, 4)), "none"
    if cmd_topic is not None:
        kind = COMMAND_TYPES[contents.topics[cmd_topic]]
        cmd_t, cmd_rows = _decode_commands(contents, cmd_topic, kind, config, problems)
    if len(cmd_t) == 0:
        where = f"'{cmd_topic or drive_topic}'" if cmd_topic or drive_topic else "any command topic (AckermannDriveStamped/TwistStamped)"
        problems.append(f"no commands on {where}: odometry only")
        cmd_topic, kind = None, "none"
    if len(odom_t) == 0:
        raise MbrlError(f"{path}: no odometry messages on '{chosen['odom']}'")
    t0 = int(min(odom_t[0], cmd_t[0])) if len(cmd_t) else int(odom_t[0])
    odom[:, 2] = np.unwrap(odom[:, 2])
    drive = RecordedDrive(
        odom_t_s=(odom_t - t0) * 1e-9, odom=odom, cmd_t_s=(cmd_t - t0) * 1e-9, cmd=np.zeros((len(cmd_t), 2)),
        cmd_speed_mps=cmd_rows[:, 2].copy(), t0_ns=t0, odom_topic=chosen["odom"], cmd_topic=cmd_topic, cmd_type=kind,
        truncated=contents.truncated)
    if len(cmd_t):
        _finish_commands(drive, cmd_rows, kind, config, params, problems)
    drive.gaps_s = _gaps(drive.odom_t_s, config.max_gap_s)
    if len(drive.gaps_s):
        longest = int(np.argmax(np.diff(drive.gaps_s, axis=1)))
        problems.append(f"odometry: {len(drive.gaps_s)} gap(s) longer than {config.max_gap_s:g} s (longest "
                        f"{np.diff(drive.gaps_s[longest])[0]:.3f} s at t={drive.gaps_s[longest, 0]:.2f} s)")
    for text in problems:
        LOG.warning("%s: %s", path.name, text)
    drive.warnings = problems
    return drive


def _pick_odom_topic(path: Path, topics: dict[str, str], wanted: str | None) -> str:
    odoms = sorted(t for t, typ in topics.items() if typ == ODOMETRY_TYPE)
    if wanted is not None:
        if wanted not in topics:
            raise MbrlError(f"{path}: no topic '{wanted}' (odometry topics: {', '.join(odoms) or 'none'})")
        if topics[wanted] != ODOMETRY_TYPE:
            raise MbrlError(f"{path}: topic '{wanted}' is {topics[wanted]}, not {ODOMETRY_TYPE}")
        return wanted
    if DEFAULT_ODOM_TOPIC in odoms or len(odoms) == 1:
        return DEFAULT_ODOM_TOPIC if DEFAULT_ODOM_TOPIC in odoms else odoms[0]
    if not odoms:
        raise MbrlError(f"{path}: no {ODOMETRY_TYPE} topic (topics: {', '.join(sorted(topics)) or 'none'})")
    raise MbrlError(f"{path}: several odometry topics ({', '.join(odoms)}); choose one with --odom-topic")


def _pick_command_topic(path: Path, topics: dict[str, str], wanted: str | None) -> str | None:
    commands = sorted(t for t, typ in topics.items() if typ in COMMAND_TYPES)
    if wanted is not None:
        if wanted in topics and topics[wanted] not in COMMAND_TYPES:
            raise MbrlError(f"{path}: topic '{wanted}' is {topics[wanted]}, not a command type "
                            f"({', '.join(COMMAND_TYPES)})")
        return wanted if wanted in topics else None
    for name in DEFAULT_DRIVE_TOPICS:
        if name in commands:
            return name
    if len(commands) > 1:
        raise MbrlError(f"{path}: several command topics ({', '.join(commands)}); choose one with --drive-topic")
    return commands[0] if commands else None


# ---- stamps, decoding, cleaning -------------------------------------------------------------

def _stamps_ns(msgs: list, receive_ns: np.ndarray, config: DriveReadConfig) -> np.ndarray:
    """Header stamps, or the bag's receive times (chosen, or when most header stamps are zero / absent)."""
    if config.time_source == "receive" or not msgs or not hasattr(msgs[0], "header"):
        return receive_ns
    stamps = np.array([m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in msgs], dtype=np.int64)
    return receive_ns if np.count_nonzero(stamps == 0) > len(stamps) // 2 else stamps


def _deserialize(contents: _BagContents, topic: str, problems: list[str]) -> tuple[list, np.ndarray]:
    """Decoded messages of a topic and their receive times; undecodable messages are dropped (warned)."""
    msgtype = contents.topics[topic]
    msgs, times, bad = [], [], 0
    for t_ns, raw in contents.messages.get(topic, []):
        try:
            msgs.append(contents.store.deserialize_cdr(raw, msgtype))
            times.append(t_ns)
        except Exception:  # noqa: BLE001 - rosbags raises several types for damaged payloads
            bad += 1
    if bad:
        problems.append(f"{topic}: {bad} message(s) could not be decoded (dropped)")
    return msgs, np.asarray(times, dtype=np.int64)


def _clean(t_ns: np.ndarray, rows: np.ndarray, topic: str, problems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Drop non-finite rows, sort by stamp, keep the last received of equal stamps; report each."""
    finite = np.all(np.isfinite(rows), axis=1)
    if not finite.all():
        problems.append(f"{topic}: {int((~finite).sum())} message(s) with non-finite values (dropped)")
        t_ns, rows = t_ns[finite], rows[finite]
    backwards = int(np.count_nonzero(np.diff(t_ns) < 0))
    if backwards:
        problems.append(f"{topic}: {backwards} message(s) out of stamp order (sorted)")
    order = np.argsort(t_ns, kind="stable")
    t_ns, rows = t_ns[order], rows[order]
    last = np.ones(len(t_ns), dtype=bool)
    last[:-1] = t_ns[1:] != t_ns[:-1]
    if not last.all():
        problems.append(f"{topic}: {int((~last).sum())} duplicate stamp(s) (kept the last message)")
    return t_ns[last], rows[last]


def _decode_odometry(contents: _BagContents, topic: str, config: DriveReadConfig,
                     problems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    msgs, receive = _deserialize(contents, topic, problems)
    rows = np.empty((len(msgs), 6))
    for i, m in enumerate(msgs):
        p, q, tw = m.pose.pose.position, m.pose.pose.orientation, m.twist.twist
        rows[i] = (p.x, p.y, quaternion_to_yaw(q.x, q.y, q.z, q.w), tw.linear.x, tw.linear.y, tw.angular.z)
    return _clean(_stamps_ns(msgs, receive, config), rows, topic, problems)


def _decode_commands(contents: _BagContents, topic: str, kind: str, config: DriveReadConfig,
                     problems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows (steer_rad, accel_mps2, speed_mps, yaw_rate_radps): ackermann fills 0-2, twist 2-3."""
    msgs, receive = _deserialize(contents, topic, problems)
    rows = np.zeros((len(msgs), 4))
    for i, m in enumerate(msgs):
        if kind == "ackermann":
            d = m.drive if hasattr(m, "drive") else m
            rows[i, :3] = (d.steering_angle, d.acceleration, d.speed)
        else:
            tw = m.twist if hasattr(m, "twist") else m
            rows[i, 2:] = (tw.linear.x, tw.angular.z)
    return _clean(_stamps_ns(msgs, receive, config), rows, topic, problems)


def _finish_commands(drive: RecordedDrive, rows: np.ndarray, kind: str, config: DriveReadConfig, params,
                     problems: list[str]) -> None:
    """Steering (twist: kinematic relation) and acceleration (field or from the speed set-point)."""
    if kind == "twist":
        if params is None:
            from mbrl_control.config import load_vehicle_params

            params = load_vehicle_params()
        drive.cmd[:, U.STEER_CMD] = twist_to_steering(rows[:, 2], rows[:, 3], params.wheelbase_m, config.twist_min_speed_mps,
                                                      params.steer_min_rad, params.steer_max_rad)
    else:
        drive.cmd[:, U.STEER_CMD] = rows[:, 0]
    field_usable = kind == "ackermann" and bool(np.any(rows[:, 1] != 0.0))
    use_field = config.accel_source == "field" or (config.accel_source == "auto" and field_usable)
    if use_field and kind == "twist":
        raise MbrlError("bag: accel_source 'field' needs AckermannDrive commands (twist has no acceleration)")
    if use_field:
        drive.cmd[:, U.ACCEL] = rows[:, 1]
        return
    drive.cmd[:, U.ACCEL] = accel_from_speed_setpoint(drive.cmd_t_s, drive.cmd_speed_mps, drive.odom_t_s, drive.odom_speed_mps())
    drive.accel_from_speed = True
    if kind == "ackermann" and config.accel_source == "auto":
        problems.append("commands carry no acceleration: derived from the speed set-points")


def twist_to_steering(speed_mps: np.ndarray, yaw_rate_radps: np.ndarray, wheelbase_m: float, min_speed_mps: float,
                      steer_min_rad: float, steer_max_rad: float) -> np.ndarray:
    """Steering angle of a twist command by the kinematic bicycle: ``atan(L * wz / v)``, clipped to the limits.

    Below ``min_speed_mps`` the relation is undefined; the previous angle is held (0 at the start).
    """
    speed_mps = np.asarray(speed_mps, dtype=np.float64)
    moving = np.abs(speed_mps) >= min_speed_mps
    steer = np.where(moving, np.arctan(wheelbase_m * np.asarray(yaw_rate_radps) / np.where(moving, speed_mps, 1.0)), np.nan)
    idx = np.where(moving, np.arange(len(steer)), -1)
    idx = np.maximum.accumulate(idx) if len(idx) else idx
    held = np.where(idx >= 0, steer[np.maximum(idx, 0)], 0.0)
    return np.clip(held, steer_min_rad, steer_max_rad)


def accel_from_speed_setpoint(cmd_t_s: np.ndarray, speed_cmd_mps: np.ndarray, odom_t_s: np.ndarray,
                              odom_speed_mps: np.ndarray) -> np.ndarray:
    """Acceleration a speed set-point asks for: ``(speed_cmd - v_odom(t_cmd)) / command_period``.

    The inverse of :func:`command_speed` (a controller sending ``v + a dt`` gets its ``a`` back);
    the period is the median spacing of the commands.
    """
    if len(cmd_t_s) < 2 or len(odom_t_s) == 0:
        return np.zeros(len(cmd_t_s))
    period = float(np.median(np.diff(cmd_t_s)))
    return (speed_cmd_mps - np.interp(cmd_t_s, odom_t_s, odom_speed_mps)) / period


def _gaps(t_s: np.ndarray, max_gap_s: float) -> np.ndarray:
    """(G, 2) [start, end] of the intervals between consecutive samples longer than ``max_gap_s``."""
    if len(t_s) < 2:
        return np.zeros((0, 2))
    idx = np.flatnonzero(np.diff(t_s) > max_gap_s)
    return np.stack([t_s[idx], t_s[idx + 1]], axis=1)


# ---- opening bags (rosbags), damaged files (own MCAP scan) ---------------------------------

def _storage_files(path: Path) -> list[Path]:
    """The storage files of a bag path (a directory's .mcap/.db3 in name order, or the file)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
    return [path]


def _load_bag(path: Path, select: Callable[[dict[str, str]], set[str]]) -> _BagContents:
    """Raw messages of the topics ``select`` picks from the bag's topics; damaged MCAP is salvaged."""
    if not path.exists():
        raise MbrlError(f"bag not found: {path}")
    if path.is_file() and path.suffix not in (".mcap", ".db3"):
        raise MbrlError(f"{path}: not a rosbag2 (expected a bag directory, a .mcap or a .db3 file)")
    files = _storage_files(path)
    if path.is_dir() and not files:
        raise MbrlError(f"{path}: no .mcap or .db3 storage file in the bag directory")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        if len(files) > 1:
            raise MbrlError(f"{path}: bag directory without metadata.yaml holds several storage files; open one")
        return _load_bag(files[0], select)
    try:
        return _read_with_rosbags(path, select)
    except _ReadFailure as failure:
        if all(f.suffix == ".mcap" for f in files):
            return _salvage_mcap(path, files, select, failure)
        if failure.partial is not None and failure.partial.messages:
            failure.partial.problems.append(f"damaged bag ({failure}); using the messages read before the damage")
            failure.partial.truncated = True
            return failure.partial
        raise MbrlError(f"{path}: cannot read bag: {failure}") from None


class _ReadFailure(Exception):
    """rosbags could not open or finish a bag; ``partial`` holds what was read before."""

    def __init__(self, message: str, partial: _BagContents | None = None) -> None:
        super().__init__(message)
        self.partial = partial


def _read_with_rosbags(path: Path, select: Callable[[dict[str, str]], set[str]]) -> _BagContents:
    from rosbags.rosbag2 import Reader

    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - ReaderError, FileNotFoundError, apsw errors, ...
        raise _ReadFailure(_one_line(exc)) from None
    try:
        conns = reader.connections
        topics = {c.topic: c.msgtype for c in conns}
        chosen = select(topics)
        definitions = [(c.msgtype, c.msgdef.format.name, c.msgdef.data) for c in conns]
        contents = _BagContents(topics, {t: [] for t in chosen}, None, [])
        contents.store = _bag_typestore(definitions, contents.problems)
        try:
            for conn, t_ns, raw in reader.messages(connections=[c for c in conns if c.topic in chosen]):
                contents.messages[conn.topic].append((int(t_ns), bytes(raw)))
        except Exception as exc:  # noqa: BLE001
            raise _ReadFailure(_one_line(exc), contents) from None
        return contents
    finally:
        try:
            reader.close()
        except Exception:  # noqa: BLE001 - closing a damaged file may fail again
            pass


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _bag_typestore(definitions: list[tuple[str, str, str]], problems: list[str]):
    """The built-in typestore, overlaid with the bag's own definitions where they add or differ."""
    base = typestore()
    types: dict = {}
    for msgtype, fmt, data in definitions:
        if not data or fmt == "NONE":
            continue
        try:
            if fmt == "MSG":
                types.update(get_types_from_msg(data, msgtype))
            else:
                sep = "=" * 80 + "\n"
                parts = [p.split("\n", 1)[1] for p in data.split(sep)[1:]] if data.startswith(f"{sep}IDL: ") else [data]
                for idl in parts:
                    types.update(get_types_from_idl(idl))
        except Exception as exc:  # noqa: BLE001 - a bad definition falls back to the built-in type
            problems.append(f"definition of {msgtype} in the bag is unreadable ({_one_line(exc)}); using the built-in one")
    extra = {name: d for name, d in types.items() if base.fielddefs.get(name) != d}
    if not extra:
        return base
    store = get_typestore(Stores.EMPTY)
    store.register({**base.fielddefs, **extra})
    return store


_MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_DATA_END = 0x02, 0x03, 0x04, 0x05, 0x06, 0x0F


@dataclass
class _McapScan:
    """What a sequential scan of an MCAP file recovered (in file order)."""

    schemas: dict = field(default_factory=dict)  # id -> (name, encoding, data)
    channels: dict = field(default_factory=dict)  # id -> (topic, schema id)
    messages: list = field(default_factory=list)  # (channel id, log time ns, data)


class _Reader:
    """Little-endian field reader over a bytes record (MCAP strings/bytes are u32-length-prefixed)."""

    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def uint(self, size: int) -> int:
        if self.pos + size > len(self.buf):
            raise ValueError("record shorter than its fields")
        self.pos += size
        return int.from_bytes(self.buf[self.pos - size:self.pos], "little")

    def raw(self, size: int) -> bytes:
        if self.pos + size > len(self.buf):
            raise ValueError("record shorter than its fields")
        self.pos += size
        return bytes(self.buf[self.pos - size:self.pos])

    def string(self) -> str:
        return self.raw(self.uint(4)).decode("utf-8")


def _scan_records(buf: bytes, pos: int, scan: _McapScan, top: bool) -> str | None:
    """Walk MCAP records from ``pos``; returns why it stopped early (None: clean end)."""
    end = len(buf)
    while pos < end:
        if end - pos < 9:
            return f"record header cut off at byte {pos}"
        op = buf[pos]
        stop = pos + 9 + int.from_bytes(buf[pos + 1:pos + 9], "little")
        if stop > end:
            if top and op == _OP_CHUNK:
                _partial_chunk(buf[pos + 9:end], scan)
            return f"record cut off at byte {pos} of {end}"
        if top and op in (_OP_DATA_END, _OP_FOOTER):
            return None
        try:
            problem = _scan_record(op, buf[pos + 9:stop], scan, top)
        except (ValueError, UnicodeDecodeError, zlib.error) as exc:
            problem = f"bad record at byte {pos}: {exc}"
        if problem:
            return problem
        pos = stop
    return "file ends without the MCAP footer" if top else None


def _scan_record(op: int, body: bytes, scan: _McapScan, top: bool) -> str | None:
    rec = _Reader(body)
    if op == _OP_SCHEMA:
        key = rec.uint(2)
        scan.schemas[key] = (rec.string(), rec.string(), rec.raw(rec.uint(4)).decode("utf-8"))
    elif op == _OP_CHANNEL:
        key, schema_id = rec.uint(2), rec.uint(2)
        scan.channels[key] = (rec.string(), schema_id)
    elif op == _OP_MESSAGE:
        channel, _seq, log_time = rec.uint(2), rec.uint(4), rec.uint(8)
        rec.uint(8)
        scan.messages.append((channel, log_time, bytes(body[rec.pos:])))
    elif op == _OP_CHUNK and top:
        header = _chunk_header(rec)
        records = rec.raw(header["size"])
        data = _decompress(records, header["compression"], complete=True)
        if len(data) != header["uncompressed"] or (header["crc"] and zlib.crc32(data) != header["crc"]):
            return "a chunk fails its size or checksum check"
        inner = _scan_records(data, 0, scan, top=False)
        return f"inside a chunk: {inner}" if inner else None
    return None


def _chunk_header(rec: _Reader) -> dict:
    rec.uint(8), rec.uint(8)
    uncompressed, crc = rec.uint(8), rec.uint(4)
    compression = rec.string()
    return {"uncompressed": uncompressed, "crc": crc, "compression": compression, "size": rec.uint(8)}


def _decompress(data: bytes, compression: str, complete: bool) -> bytes:
    """Chunk records; an incomplete zstd stream gives what decodes, an incomplete lz4 one nothing."""
    if compression == "":
        return data
    if compression == "zstd":
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:
            from backports import zstd
        try:
            return zstd.decompress(data) if complete else zstd.ZstdDecompressor().decompress(data)
        except zstd.ZstdError as exc:
            raise ValueError(f"zstd: {exc}") from None
    if compression == "lz4" and complete:
        import lz4.frame

        return lz4.frame.decompress(data)
    if compression == "lz4":
        return b""
    raise ValueError(f"unsupported chunk compression {compression!r}")


def _partial_chunk(body: bytes, scan: _McapScan) -> None:
    """Complete records of a chunk the file cut off (uncompressed or zstd)."""
    rec = _Reader(body)
    try:
        header = _chunk_header(rec)
        data = _decompress(bytes(body[rec.pos:rec.pos + header["size"]]), header["compression"], complete=False)
    except (ValueError, UnicodeDecodeError):
        return
    _scan_records(data, 0, scan, top=False)


def _salvage_mcap(path: Path, files: list[Path], select: Callable[[dict[str, str]], set[str]],
                  failure: _ReadFailure) -> _BagContents:
    """Recover the valid prefix of damaged MCAP storage by scanning it record by record."""
    scan, reasons = _McapScan(), []
    for file in files:
        data = file.read_bytes()
        if not data.startswith(_MCAP_MAGIC):
            raise MbrlError(f"{file}: not an MCAP file ({failure})")
        reason = _scan_records(data, len(_MCAP_MAGIC), scan, top=True)
        if reason:
            reasons.append(f"{file.name}: {reason}")
    topics, definitions = {}, []
    for topic, schema_id in scan.channels.values():
        if schema_id in scan.schemas:
            name, encoding, text = scan.schemas[schema_id]
            topics[topic] = name
            definitions.append((name, {"ros2msg": "MSG", "ros2idl": "IDL", "omgidl": "IDL"}.get(encoding, "NONE"), text))
    if not scan.messages:
        raise MbrlError(f"{path}: damaged bag with no recoverable messages ({failure})")
    chosen = select(topics)
    contents = _BagContents(topics, {t: [] for t in chosen}, None, [], truncated=True)
    contents.store = _bag_typestore(definitions, contents.problems)
    by_channel = {cid: topic for cid, (topic, _) in scan.channels.items() if topic in chosen}
    for channel, t_ns, raw in scan.messages:
        if channel in by_channel:
            contents.messages[by_channel[channel]].append((t_ns, raw))
    kept = sum(len(v) for v in contents.messages.values())
    last = max((t for v in contents.messages.values() for t, _ in v), default=0)
    first = min((t for v in contents.messages.values() for t, _ in v), default=0)
    contents.problems.append(f"truncated or damaged ({'; '.join(reasons) or failure}); using the valid prefix: "
                             f"{kept} messages over {(last - first) * 1e-9:.2f} s")
    return contents


def add_bag_arguments(p) -> None:
    """The bag-reading flags shared by ``fit``, ``replay`` and ``tune`` (argparse parser ``p``)."""
    p.add_argument("--odom-topic", default="", help="nav_msgs/Odometry topic (default /odom, or the only one)")
    p.add_argument("--drive-topic", default="", help="AckermannDriveStamped/TwistStamped topic (default /drive or /cmd_vel)")
    p.add_argument("--time-source", default="header", choices=("header", "receive"), help="message stamps or bag receive time")
    p.add_argument("--accel-source", default="auto", choices=("auto", "field", "speed"),
                   help="command acceleration: the field (auto: unless all zero) or derived from the speed set-point")
    p.add_argument("--max-gap", type=float, default=0.1, help="odometry gap [s] reported (and not bridged)")


def drive_read_config(args) -> DriveReadConfig:
    """The :class:`DriveReadConfig` of the flags added by :func:`add_bag_arguments`."""
    from mbrl_control.config import dataclass_from_dict

    return dataclass_from_dict(DriveReadConfig, {
        "odom_topic": args.odom_topic, "drive_topic": args.drive_topic, "time_source": args.time_source,
        "accel_source": args.accel_source, "max_gap_s": args.max_gap}, "bag")
