"""Reading recorded drives: MCAP and sqlite3 storage, bag directories and bare files, command types,
imperfect stamps, missing command topics, custom message definitions, truncated and corrupt files."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from mbrl_control import MbrlError
from mbrl_control.bag import (ACKERMANN_TYPE, ODOMETRY_TYPE, TWIST_TYPE, DriveReadConfig, TelemetryWriter,
                              accel_from_speed_setpoint, ackermann_msg, command_speed, msg_definition, odometry_msg,
                              read_drive, twist_to_steering, typestore)
from mbrl_control.models.layout import S, U

DT = 0.02
N = 150


def drive_signals(n: int = N, dt: float = DT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times, states (a curving, speeding-up drive with some slip) and the commands sent at them."""
    t = np.arange(n) * dt
    states = np.zeros((n, 7))
    states[:, S.V] = 1.0 + 2.0 * t
    states[:, S.YAW] = 0.4 * np.sin(0.8 * t) + 3.0 * t  # crosses +-pi: the reader must unwrap it
    states[:, S.X] = np.cumsum(states[:, S.V] * np.cos(states[:, S.YAW])) * dt
    states[:, S.Y] = np.cumsum(states[:, S.V] * np.sin(states[:, S.YAW])) * dt
    states[:, S.YAW_RATE] = np.gradient(states[:, S.YAW], dt)
    states[:, S.SLIP] = 0.05 * np.sin(2.0 * t)
    controls = np.stack([0.3 * np.sin(1.5 * t), 2.0 + np.cos(3.0 * t)], axis=1)
    return t, states, controls


def odometry_rows(states: np.ndarray) -> np.ndarray:
    """The (x, y, yaw, vx_body, vy_body, yaw_rate) odometry of states (yaw continuous)."""
    v, slip = states[:, S.V], states[:, S.SLIP]
    return np.stack([states[:, S.X], states[:, S.Y], states[:, S.YAW], v * np.cos(slip), v * np.sin(slip),
                     states[:, S.YAW_RATE]], axis=1)


def write_rosbags(path: Path, storage: StoragePlugin, odom: list[tuple[float, float, np.ndarray]],
                  commands: list[tuple[float, float, object]] = (), command_type: str = ACKERMANN_TYPE,
                  store=None, odom_topic: str = "/odom", command_topic: str = "/drive", extra_topics=()) -> Path:
    """A rosbag2 written with rosbags' Writer; entries are (receive time, header stamp, state or message)."""
    store = store or typestore()
    with Writer(path, version=9, storage_plugin=storage) as writer:
        oc = writer.add_connection(odom_topic, ODOMETRY_TYPE, typestore=store)
        cc = writer.add_connection(command_topic, command_type, typestore=store) if commands else None
        for topic in extra_topics:
            writer.add_connection(topic, ODOMETRY_TYPE, typestore=store)
        events = [(r, oc, store.serialize_cdr(odometry_msg(store, h, s), ODOMETRY_TYPE)) for r, h, s in odom]
        events += [(r, cc, store.serialize_cdr(m, command_type)) for r, h, m in commands]
        for receive_s, conn, raw in events:  # written in the given order (receive times may go backwards)
            writer.write(conn, int(round(receive_s * 1e9)), raw)
    return path


def ackermann_entries(t: np.ndarray, states: np.ndarray, controls: np.ndarray, store=None):
    store = store or typestore()
    return [(ti, ti, ackermann_msg(store, ti, u, command_speed(s, u, DT))) for ti, s, u in zip(t, states, controls)]


@pytest.fixture(scope="module")
def signals():
    return drive_signals()


@pytest.fixture(scope="module")
def telemetry_mcap(tmp_path_factory, signals):
    t, states, controls = signals
    path = tmp_path_factory.mktemp("mcap") / "telemetry.mcap"
    with TelemetryWriter(path) as writer:
        for ti, s, u in zip(t, states, controls):
            writer.odometry(ti, s)
            writer.command(ti, u, command_speed(s, u, DT))
            writer.planned_path(ti, s[None, [S.X, S.Y]].repeat(3, axis=0))
    return path


def assert_drive_matches(drive, signals, cmd_atol: float = 1e-6) -> None:
    t, states, controls = signals
    np.testing.assert_allclose(drive.odom_t_s, t, atol=1e-9)
    np.testing.assert_allclose(drive.odom, odometry_rows(states), atol=1e-9)
    np.testing.assert_allclose(drive.cmd_t_s, t, atol=1e-9)
    np.testing.assert_allclose(drive.cmd, controls, atol=cmd_atol)  # float32 message fields


def test_mcap_file_and_directory_round_trip(tmp_path, telemetry_mcap, signals):
    drive = read_drive(telemetry_mcap)
    assert_drive_matches(drive, signals)
    assert drive.cmd_type == "ackermann" and not drive.accel_from_speed and not drive.truncated
    assert drive.warnings == [] and drive.gaps_s.shape == (0, 2)
    assert np.all(np.diff(drive.odom_t_s) > 0)
    bag_dir = tmp_path / "bag"
    with TelemetryWriter(bag_dir) as writer:  # a rosbag2 directory with metadata.yaml
        for ti, s, u in zip(*signals):
            writer.odometry(ti, s)
            writer.command(ti, u, command_speed(s, u, DT))
    assert (bag_dir / "metadata.yaml").is_file()
    assert_drive_matches(read_drive(bag_dir), signals)
    (bag_dir / "metadata.yaml").unlink()  # a recorder killed before writing metadata: the storage file is read
    assert_drive_matches(read_drive(bag_dir), signals)


def test_sqlite3_directory_and_bare_db3(tmp_path, signals):
    t, states, controls = signals
    bag = write_rosbags(tmp_path / "sq", StoragePlugin.SQLITE3, [(ti, ti, s) for ti, s in zip(t, states)],
                        ackermann_entries(t, states, controls))
    assert (bag / "sq.db3").is_file()
    assert_drive_matches(read_drive(bag), signals)
    assert_drive_matches(read_drive(bag / "sq.db3"), signals)


def test_accel_from_speed_setpoint_recovers_the_acceleration(telemetry_mcap, signals):
    drive = read_drive(telemetry_mcap, config=DriveReadConfig(accel_source="speed"))
    assert drive.accel_from_speed
    # speed = v + a dt is stored as float32: (speed - v) / dt carries ~1e-6 * v / dt of rounding
    np.testing.assert_allclose(drive.cmd[:, U.ACCEL], signals[2][:, U.ACCEL], atol=2e-3)
    np.testing.assert_allclose(drive.cmd[:, U.STEER_CMD], signals[2][:, U.STEER_CMD], atol=1e-6)


def test_speed_only_ackermann_commands_get_their_acceleration_from_the_speed(tmp_path, signals, caplog):
    t, states, controls = signals
    store = typestore()
    entries = [(ti, ti, ackermann_msg(store, ti, np.array([u[0], 0.0]), command_speed(s, u, DT)))
               for ti, s, u in zip(t, states, controls)]
    bag = write_rosbags(tmp_path / "speed_only", StoragePlugin.MCAP, [(ti, ti, s) for ti, s in zip(t, states)], entries)
    with caplog.at_level(logging.WARNING, logger="mbrl_control.bag"):
        drive = read_drive(bag)
    assert drive.accel_from_speed and any("speed set-points" in w for w in drive.warnings)
    assert "speed set-points" in caplog.text
    np.testing.assert_allclose(drive.cmd[:, U.ACCEL], controls[:, U.ACCEL], atol=2e-3)
    with pytest.raises(MbrlError, match="accel_source"):
        DriveReadConfig(accel_source="guess").validate()


def test_twist_commands_become_steering_by_the_kinematic_relation(tmp_path, signals, params):
    t, states, controls = signals
    store = typestore()
    steer = np.clip(controls[:, U.STEER_CMD], params.steer_min_rad, params.steer_max_rad)
    speed = np.array([command_speed(s, u, DT) for s, u in zip(states, controls)])
    speed[:5] = 0.0  # standing: the steering is undefined, held at 0 until the car moves
    wz = speed * np.tan(steer) / params.wheelbase_m  # the forward kinematic relation
    vec = store.types["geometry_msgs/msg/Vector3"]
    entries = []
    for ti, v, w in zip(t, speed, wz):
        twist = store.types["geometry_msgs/msg/Twist"](linear=vec(x=v, y=0.0, z=0.0), angular=vec(x=0.0, y=0.0, z=w))
        header = store.types["std_msgs/msg/Header"](stamp=store.types["builtin_interfaces/msg/Time"](
            sec=int(ti), nanosec=int(round((ti - int(ti)) * 1e9))), frame_id="base_link")
        entries.append((ti, ti, store.types[TWIST_TYPE](header=header, twist=twist)))
    bag = write_rosbags(tmp_path / "twist", StoragePlugin.SQLITE3, [(ti, ti, s) for ti, s in zip(t, states)], entries,
                        command_type=TWIST_TYPE, command_topic="/cmd_vel")
    drive = read_drive(bag, params=params)
    assert drive.cmd_type == "twist" and drive.cmd_topic == "/cmd_vel" and drive.accel_from_speed
    np.testing.assert_allclose(drive.cmd[5:, U.STEER_CMD], steer[5:], atol=1e-9)
    assert np.all(drive.cmd[:5, U.STEER_CMD] == 0.0)
    np.testing.assert_allclose(drive.cmd_speed_mps, speed)
    np.testing.assert_allclose(drive.cmd[6:, U.ACCEL], controls[6:, U.ACCEL], atol=1e-9)


def test_twist_to_steering_holds_below_the_minimum_speed_and_clips():
    steer = twist_to_steering(np.array([0.0, 2.0, 0.01, -2.0, 1.0]), np.array([1.0, 1.0, 5.0, 1.0, 50.0]), 0.33, 0.1, -0.4, 0.4)
    expected_moving = math.atan(0.33 * 1.0 / 2.0)
    np.testing.assert_allclose(steer, [0.0, expected_moving, expected_moving, -expected_moving, 0.4])


def test_accel_from_speed_setpoint_inverts_command_speed():
    rng = np.random.default_rng(0)
    t = np.arange(50) * 0.05
    v = rng.uniform(0, 8, 50)
    a = rng.uniform(-5, 5, 50)
    speed_cmd = np.array([command_speed(np.array([0, 0, 0, vi, 0, 0, 0]), np.array([0.0, ai]), 0.05) for vi, ai in zip(v, a)])
    np.testing.assert_allclose(accel_from_speed_setpoint(t, speed_cmd, t, v), a, atol=1e-9)


def test_bag_without_command_topic_gives_odometry_only_with_a_warning(tmp_path, signals, caplog):
    t, states, _ = signals
    bag = write_rosbags(tmp_path / "odom_only", StoragePlugin.MCAP, [(ti, ti, s) for ti, s in zip(t, states)])
    with caplog.at_level(logging.WARNING, logger="mbrl_control.bag"):
        drive = read_drive(bag)
    assert not drive.has_commands and drive.cmd_type == "none" and drive.cmd_topic is None
    assert drive.cmd.shape == (0, 2) and drive.cmd_speed_mps.shape == (0,)
    np.testing.assert_allclose(drive.odom, odometry_rows(states), atol=1e-9)
    assert "odometry only" in caplog.text
    named = read_drive(bag, drive_topic="/ackermann_cmd")  # a named command topic that is absent: the same
    assert not named.has_commands and "'/ackermann_cmd'" in named.warnings[0]


def test_out_of_order_duplicate_and_gapped_stamps(tmp_path, signals):
    t, states, controls = signals
    keep = np.ones(len(t), dtype=bool)
    keep[60:70] = False  # a 0.22 s odometry gap
    order = np.flatnonzero(keep)
    rng = np.random.default_rng(3)
    swapped = order.copy()
    for i in rng.choice(len(order) - 1, 8, replace=False):  # neighbours received in swapped order
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    odom = [(t[i] + 0.001 * rng.random(), t[i], states[i]) for i in swapped]
    stale = states[20].copy()
    stale[S.X] += 5.0  # a duplicate stamp: the later message wins
    odom.insert(30, (t[20] - 0.0005, t[20], stale))
    odom.append((t[-1] + 0.01, t[20], states[20]))
    bag = write_rosbags(tmp_path / "messy", StoragePlugin.SQLITE3, odom, ackermann_entries(t, states, controls))
    drive = read_drive(bag, config=DriveReadConfig(max_gap_s=0.1))
    np.testing.assert_allclose(drive.odom_t_s, t[keep], atol=1e-9)
    np.testing.assert_allclose(drive.odom, odometry_rows(states)[keep], atol=1e-9)
    np.testing.assert_allclose(drive.gaps_s, [[t[59], t[70]]], atol=1e-9)
    text = " ".join(drive.warnings)
    assert "out of stamp order" in text and "duplicate stamp" in text and "gap" in text
    by_receive = read_drive(bag, config=DriveReadConfig(time_source="receive"))
    assert np.all(np.diff(by_receive.odom_t_s) > 0) and len(by_receive.odom_t_s) == keep.sum() + 2


def test_custom_types_decode_with_the_bags_own_definitions(tmp_path, signals):
    """A bag whose AckermannDrive has an extra field decodes as recorded, not with the built-in definition."""
    t, states, controls = signals
    custom = get_typestore(Stores.ROS2_JAZZY)
    drive_def = msg_definition("ackermann_msgs/msg/AckermannDrive") + "\nfloat32 motor_temperature\n"
    custom.register(get_types_from_msg(drive_def, "ackermann_msgs/msg/AckermannDrive"))
    custom.register(get_types_from_msg(msg_definition(ACKERMANN_TYPE), ACKERMANN_TYPE))
    entries = []
    for ti, s, u in zip(t, states, controls):
        header = custom.types["std_msgs/msg/Header"](stamp=custom.types["builtin_interfaces/msg/Time"](
            sec=int(ti), nanosec=int(round((ti - int(ti)) * 1e9))), frame_id="base_link")
        d = custom.types["ackermann_msgs/msg/AckermannDrive"](steering_angle=u[0], steering_angle_velocity=0.0,
                                                             speed=command_speed(s, u, DT), acceleration=u[1], jerk=0.0,
                                                             motor_temperature=55.0)
        entries.append((ti, ti, custom.types[ACKERMANN_TYPE](header=header, drive=d)))
    bag = write_rosbags(tmp_path / "custom", StoragePlugin.SQLITE3, [(ti, ti, s) for ti, s in zip(t, states)], entries,
                        store=custom)
    assert_drive_matches(read_drive(bag), signals)


def test_topics_are_configurable_and_checked(tmp_path, signals):
    t, states, controls = signals
    bag = write_rosbags(tmp_path / "two_odoms", StoragePlugin.MCAP, [(ti, ti, s) for ti, s in zip(t, states)],
                        ackermann_entries(t, states, controls), odom_topic="/ego_racecar/odom", extra_topics=("/opp/odom",))
    with pytest.raises(MbrlError, match="several odometry topics"):
        read_drive(bag)
    assert_drive_matches(read_drive(bag, odom_topic="/ego_racecar/odom"), signals)
    with pytest.raises(MbrlError, match="no topic '/odom'"):
        read_drive(bag, odom_topic="/odom")
    with pytest.raises(MbrlError, match="not a command type"):
        read_drive(bag, odom_topic="/ego_racecar/odom", drive_topic="/opp/odom")
    with pytest.raises(MbrlError, match="not nav_msgs/msg/Odometry"):
        read_drive(bag, odom_topic="/drive")


def test_truncated_mcap_gives_its_valid_prefix_with_a_warning(tmp_path, telemetry_mcap, signals, caplog):
    data = telemetry_mcap.read_bytes()
    full = read_drive(telemetry_mcap)
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[:int(0.6 * len(data))])
    with caplog.at_level(logging.WARNING, logger="mbrl_control.bag"):
        drive = read_drive(cut)
    assert drive.truncated and "valid prefix" in caplog.text
    n = len(drive.odom_t_s)
    assert 0.3 * N < n < N
    np.testing.assert_allclose(drive.odom, full.odom[:n])
    np.testing.assert_allclose(drive.cmd, full.cmd[:len(drive.cmd)])
    assert abs(len(drive.cmd) - n) <= 1


def test_truncated_zstd_chunks_keep_complete_chunks_and_the_decodable_tail(tmp_path, signals):
    t, states, controls = signals
    bag = tmp_path / "zstd"
    store = typestore()
    n = 2000  # > 1 MiB of odometry: two chunks
    tt = np.arange(n) * DT
    st = np.random.default_rng(1).normal(size=(n, 7))  # incompressible: the cut lands inside the chunks
    st[:, S.X] = tt
    writer = Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        conn = writer.add_connection("/odom", ODOMETRY_TYPE, typestore=store)
        for ti, s in zip(tt, st):
            writer.write(conn, int(round(ti * 1e9)), store.serialize_cdr(odometry_msg(store, ti, s), ODOMETRY_TYPE))
    full = read_drive(bag)
    np.testing.assert_allclose(full.odom[:, 0], tt)
    data = (bag / "zstd.mcap").read_bytes()
    cut = tmp_path / "cut_zstd.mcap"
    cut.write_bytes(data[:int(0.8 * len(data))])
    drive = read_drive(cut)
    assert drive.truncated and 0.5 * n < len(drive.odom_t_s) < n
    np.testing.assert_allclose(drive.odom[:, 0], tt[:len(drive.odom_t_s)])


@pytest.mark.parametrize("content, match", [
    (b"", "empty|no recoverable|not an MCAP"),
    (b"this is not a bag at all, just text" * 10, "not an MCAP"),
    (b"\x89MCAP0\r\n" + b"\x01" + (200).to_bytes(8, "little") + b"x" * 30, "no recoverable"),
])
def test_corrupt_mcap_is_one_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.mcap"
    path.write_bytes(content)
    with pytest.raises(MbrlError, match=match):
        read_drive(path)


def test_mcap_with_a_corrupt_record_keeps_every_intact_chunk(tmp_path, telemetry_mcap):
    data = bytearray(telemetry_mcap.read_bytes())
    full = read_drive(telemetry_mcap)
    # the first chunk record starts after the header record; break the length of a message inside it
    pos = len(data) // 3  # somewhere inside the chunk's messages
    msg_pos = data.index(bytes([0x05]), pos)
    while not (data[msg_pos + 9] in (1, 2, 3) and data[msg_pos + 10] == 0):  # a message record of channel 1-3
        msg_pos = data.index(bytes([0x05]), msg_pos + 1)
    data[msg_pos + 1:msg_pos + 9] = (10**12).to_bytes(8, "little")
    bad = tmp_path / "bad_record.mcap"
    bad.write_bytes(bytes(data))
    drive = read_drive(bad)
    assert drive.truncated and 0 < len(drive.odom_t_s) < len(full.odom_t_s)
    # issue 15: only the damaged chunk is lost; every intact chunk after it is kept, unchanged, and counted
    kept = np.searchsorted(full.odom_t_s, drive.odom_t_s)
    np.testing.assert_allclose(full.odom_t_s[kept], drive.odom_t_s)
    np.testing.assert_allclose(drive.odom, full.odom[kept])
    assert drive.odom_t_s[-1] == full.odom_t_s[-1] and drive.lost_messages > 0


def test_damaged_sqlite3_bag_is_one_clear_error(tmp_path, signals):
    t, states, _ = signals
    bag = write_rosbags(tmp_path / "sq", StoragePlugin.SQLITE3, [(ti, ti, s) for ti, s in zip(t, states)])
    db = bag / "sq.db3"
    db.write_bytes(db.read_bytes()[:len(db.read_bytes()) // 2])
    with pytest.raises(MbrlError, match="cannot read bag"):
        read_drive(db)


@pytest.mark.parametrize("name", ["missing.mcap", "notes.txt"])
def test_missing_or_foreign_paths(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".txt"):
        path.write_text("hello")
    with pytest.raises(MbrlError):
        read_drive(path)


def test_empty_bag_directory_and_no_odometry(tmp_path, signals):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MbrlError, match="no .mcap or .db3"):
        read_drive(tmp_path / "empty")
    t, states, controls = signals
    store = typestore()
    bag = tmp_path / "cmds_only"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/drive", ACKERMANN_TYPE, typestore=store)
        for _, ti, m in ackermann_entries(t, states, controls):
            writer.write(conn, int(ti * 1e9), store.serialize_cdr(m, ACKERMANN_TYPE))
    with pytest.raises(MbrlError, match="no nav_msgs/msg/Odometry topic"):
        read_drive(bag)
    shutil.rmtree(bag)


def _to_ros1(src: Path, dst: Path) -> Path:
    """rosbags' own converter (an independent writer) turns one of our bags into a ROS 1 bag."""
    from rosbags.convert import convert
    from rosbags.typesys import Stores, get_typestore

    convert([src], dst, dst_storage="sqlite3", dst_version=None, compress=None, compress_mode="file",
            default_typestore=typestore(), typestore=get_typestore(Stores.ROS1_NOETIC), exclude_topics=[],
            include_topics=[], exclude_msgtypes=[], include_msgtypes=[])
    return dst


def test_ros1_bag_reads_like_the_rosbag2_it_was_converted_from(tmp_path, telemetry_mcap, signals):
    bag = _to_ros1(telemetry_mcap, tmp_path / "drive.bag")
    assert bag.read_bytes().startswith(b"#ROSBAG V2.0")
    drive = read_drive(bag)
    assert_drive_matches(drive, signals)
    assert drive.cmd_type == "ackermann" and not drive.truncated and drive.warnings == []
    with pytest.raises(MbrlError, match="no odometry topic|not in the bag|/nowhere"):
        read_drive(bag, odom_topic="/nowhere")


def test_ros1_bag_cut_short_keeps_what_was_read_or_is_one_clear_error(tmp_path, telemetry_mcap, signals):
    bag = _to_ros1(telemetry_mcap, tmp_path / "drive.bag")
    data = bag.read_bytes()
    cut = tmp_path / "cut.bag"
    cut.write_bytes(data[:40])  # inside the bag header
    with pytest.raises(MbrlError, match="cannot read ROS 1 bag"):
        read_drive(cut)
