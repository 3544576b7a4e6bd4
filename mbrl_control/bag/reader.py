"""Reading recorded drives: the odometry and commands of a bag as clean arrays, and the CLI's bag flags.

Reading (:func:`read_drive`) accepts rosbag2 directories (MCAP or sqlite3 storage, with or
without ``metadata.yaml``), bare ``.mcap`` / ``.db3`` files and ROS 1 ``.bag`` files. Message types are taken from
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
* stamps of two clocks (odometry in sim time, commands in wall time): the bag's receive times
  for both, with a warning;
* truncated or damaged MCAP: every intact chunk is recovered, also those after the damage (and the
  complete records of a cut-off uncompressed or zstd chunk), with a warning that counts the lost
  messages (``RecordedDrive.lost_messages``); a file with no recoverable
  odometry, or that is no bag at all, is an :class:`MbrlError`; a damaged sqlite3 bag keeps the
  messages read before the failure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.bag.messages import COMMAND_TYPES, ODOMETRY_TYPE
from mbrl_control.bag.storage import BagContents, load_bag
from mbrl_control.models.layout import U
from mbrl_control.models.odometry import quaternion_to_yaw

DEFAULT_ODOM_TOPIC = "/odom"
DEFAULT_DRIVE_TOPICS = ("/drive", "/cmd_vel")
LOG = logging.getLogger("mbrl_control.bag")


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
    truncated: bool = False  # a damaged file: only its intact parts were read
    lost_messages: int | None = 0  # messages of the read topics lost to damage (None: unknown, a cut-off file)

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


def read_drive(path: str | Path, odom_topic: str | None = None, drive_topic: str | None = None,
               config: DriveReadConfig | None = None, params=None) -> RecordedDrive:
    """Read odometry (nav_msgs/Odometry) and commands (AckermannDrive[Stamped] or Twist[Stamped]).

    ``path``: a rosbag2 directory (MCAP or sqlite3), a bare ``.mcap`` / ``.db3`` file or a ROS 1 ``.bag``.
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

    contents = load_bag(path, select)
    problems = list(contents.problems)
    cmd_config, cmd_shift_ns = _one_clock(contents, chosen["odom"], chosen["cmd"], config, problems)
    odom_t, odom = _decode_odometry(contents, chosen["odom"], config, problems)
    cmd_topic = chosen["cmd"]
    cmd_t, cmd_rows, kind = np.zeros(0, dtype=np.int64), np.zeros((0, 4)), "none"
    if cmd_topic is not None:
        kind = COMMAND_TYPES[contents.topics[cmd_topic]]
        cmd_t, cmd_rows = _decode_commands(contents, cmd_topic, kind, cmd_config, problems)
        cmd_t = cmd_t + cmd_shift_ns
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
        truncated=contents.truncated, lost_messages=contents.lost_messages)
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


CLOCK_MISMATCH_S = 1.0
"""Header stamps of odometry and commands whose offsets to the bag's receive time differ by more than
this come from different clocks (e.g. sim time and wall time)."""


def _header_clock_offset_s(contents: BagContents, topic: str | None, sample: int = 200) -> float | None:
    """Median of (header stamp - receive time) over up to ``sample`` messages of ``topic``; None without stamps."""
    if topic is None or not contents.messages.get(topic):
        return None
    entries = contents.messages[topic]
    picked = entries[:: max(1, len(entries) // sample)][:sample]
    offsets = []
    for t_ns, raw in picked:
        try:
            msg = contents.deserialize(raw, contents.topics[topic])
        except Exception:  # noqa: BLE001 - counted when the topic is decoded
            continue
        header = getattr(msg, "header", None)
        if header is None:
            return None
        stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        if stamp:
            offsets.append((stamp - t_ns) * 1e-9)
    return float(np.median(offsets)) if offsets else None


def _one_clock(contents: BagContents, odom_topic: str, cmd_topic: str | None, config: DriveReadConfig,
               problems: list[str]) -> tuple[DriveReadConfig, int]:
    """The commands' read config and the shift [ns] that puts their stamps on the odometry's clock.

    When odometry and commands are stamped with different clocks (e.g. a simulator's sim-time
    odometry and a controller's wall-clock commands), the commands are placed by their receive
    times, moved by the median (odometry stamp - receive time): one clock per recording, the
    odometry's (the plant's), whose own stamps stay as they are.
    """
    if config.time_source != "header":
        return config, 0
    odom_offset = _header_clock_offset_s(contents, odom_topic)
    cmd_offset = _header_clock_offset_s(contents, cmd_topic)
    if odom_offset is None or cmd_offset is None or abs(odom_offset - cmd_offset) <= CLOCK_MISMATCH_S:
        return config, 0
    import dataclasses

    problems.append(f"'{odom_topic}' and '{cmd_topic}' are stamped with different clocks ({odom_offset - cmd_offset:+.3f} s "
                    f"apart); '{cmd_topic}' placed on the odometry's clock by its receive times")
    return dataclasses.replace(config, time_source="receive"), int(round(odom_offset * 1e9))


def _deserialize(contents: BagContents, topic: str, problems: list[str]) -> tuple[list, np.ndarray]:
    """Decoded messages of a topic and their receive times; undecodable messages are dropped (warned)."""
    msgtype = contents.topics[topic]
    msgs, times, bad = [], [], 0
    for t_ns, raw in contents.messages.get(topic, []):
        try:
            msgs.append(contents.deserialize(raw, msgtype))
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


def _decode_odometry(contents: BagContents, topic: str, config: DriveReadConfig,
                     problems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    msgs, receive = _deserialize(contents, topic, problems)
    rows = np.empty((len(msgs), 6))
    for i, m in enumerate(msgs):
        p, q, tw = m.pose.pose.position, m.pose.pose.orientation, m.twist.twist
        rows[i] = (p.x, p.y, quaternion_to_yaw(q.x, q.y, q.z, q.w), tw.linear.x, tw.linear.y, tw.angular.z)
    return _clean(_stamps_ns(msgs, receive, config), rows, topic, problems)


def _decode_commands(contents: BagContents, topic: str, kind: str, config: DriveReadConfig,
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

    The inverse of :func:`~mbrl_control.models.actuation.speed_after_one_period` (a controller
    sending ``v + a dt`` gets its ``a`` back); the period is the median spacing of the commands.
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
