"""Issue 15, case 4: nothing recorded is lost without saying so.

* A damaged MCAP bag keeps every intact chunk, also after the damage; the messages reported as
  recovered are exactly undamaged ones (compared with the original), and the lost count is exact.
* Many flipped bytes end in one clear MbrlError, never a traceback.
* A bag whose odometry is stamped in sim time and whose commands carry wall-clock stamps (the
  demo's own ``telemetry.mcap``) is read on one clock.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin

from mbrl_control import MbrlError
from mbrl_control.bag import read_drive
from mbrl_control.bag.messages import ACKERMANN_TYPE, ODOMETRY_TYPE, ackermann_msg, odometry_msg, typestore
from mbrl_control.bag.storage import load_bag
from mbrl_control.bag.writer import ChecksummedWriter
from mbrl_control.sysid.synthetic import excitation_drive, write_bag

DT = 0.02
TOPICS = ("/odom", "/drive")


def _select(topics):
    return {t for t in topics if t in TOPICS}


def _messages(contents) -> set:
    return {(topic, t, raw) for topic, entries in contents.messages.items() for t, raw in entries}


@pytest.fixture(scope="module")
def bag(tmp_path_factory, params):
    t, s, u = excitation_drive(params, 30.0, DT, seed=15)
    path = tmp_path_factory.mktemp("damage") / "drive.mcap"
    write_bag(path, t, s, u, DT)
    return path


def test_single_byte_flips_keep_every_intact_chunk_and_count_the_lost(bag, tmp_path):
    original = bag.read_bytes()
    reference = _messages(load_bag(bag, _select))
    total = len(reference)
    rng = random.Random(1501)
    damaged = tmp_path / "damaged.mcap"
    lost_counts = []
    for _ in range(40):
        data = bytearray(original)
        i = rng.randrange(8, len(data) - 8)
        data[i] ^= 1 << rng.randrange(8)
        damaged.write_bytes(bytes(data))
        contents = load_bag(damaged, _select)
        got = _messages(contents)
        assert got <= reference, "a recovered message differs from the original"
        lost = total - len(got)
        if contents.truncated:
            assert contents.lost_messages == lost
            assert any(f"{lost} messages lost" in p for p in contents.problems), contents.problems
        else:
            assert lost == 0  # rosbags read it: the flip hit nothing that holds a message
        lost_counts.append(lost)
        # everything after the damage is kept: at most the messages of one small chunk are gone
        assert lost <= 40, lost
    assert max(lost_counts) > 0  # some flips did hit messages


def test_flip_early_in_the_file_keeps_the_second_half(bag, tmp_path):
    data = bytearray(bag.read_bytes())
    data[len(data) // 5] ^= 0xFF
    damaged = tmp_path / "early.mcap"
    damaged.write_bytes(bytes(data))
    reference = load_bag(bag, _select)
    contents = load_bag(damaged, _select)
    last_t = max(t for _, t, _ in _messages(reference))
    assert contents.truncated and 0 < contents.lost_messages < 40
    assert max(t for _, t, _ in _messages(contents)) == last_t
    drive = read_drive(damaged)
    assert drive.lost_messages == contents.lost_messages
    assert drive.duration_s == pytest.approx(read_drive(bag).duration_s, abs=0.05)


@pytest.mark.parametrize("fraction", [0.13, 0.37, 0.61, 0.88, 0.999])
def test_truncated_files_keep_their_prefix_and_say_what_is_lost(bag, tmp_path, fraction):
    data = bag.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[:int(len(data) * fraction)])
    reference = _messages(load_bag(bag, _select))
    contents = load_bag(cut, _select)
    got = _messages(contents)
    assert got <= reference and len(got) >= 0.8 * fraction * len(reference) - 40
    if contents.lost_messages is None:  # cut inside the data: how much followed is unknown, and said so
        assert any("unknown number" in p for p in contents.problems)
    else:  # cut inside the summary at the end: every message is there
        assert contents.lost_messages == 0 and got == reference


def test_many_flipped_bytes_end_in_one_clear_error_or_a_clean_read(bag, tmp_path):
    original = bag.read_bytes()
    reference = _messages(load_bag(bag, _select))
    rng = random.Random(2000)
    damaged = tmp_path / "shredded.mcap"
    for flips in (200, 2000, 2000, 20000):
        data = bytearray(original)
        for _ in range(flips):
            data[rng.randrange(8, len(data))] ^= 1 << rng.randrange(8)
        damaged.write_bytes(bytes(data))
        try:
            drive = read_drive(damaged)
        except MbrlError as exc:
            assert "\n" not in str(exc)
            continue
        assert drive.truncated
        assert _messages(load_bag(damaged, _select)) <= reference


def test_odometry_in_sim_time_and_commands_in_wall_time_are_read_on_one_clock(tmp_path, params):
    """The demo's bag: sim_node stamps /odom from 0 (sim time), the controller stamps /drive with the wall clock."""
    t, s, u = excitation_drive(params, 20.0, DT, seed=3)
    wall0 = 1_796_280_370.0
    store = typestore()
    bag_dir = tmp_path / "demo_bag"
    writer = ChecksummedWriter(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP)
    with writer:
        odom = writer.add_connection("/odom", ODOMETRY_TYPE, typestore=store)
        drive = writer.add_connection("/drive", ACKERMANN_TYPE, typestore=store)
        for k, (ti, si, ui) in enumerate(zip(t, s, u)):
            receive = int((wall0 + ti + 0.0005) * 1e9)  # the recorder's (wall) clock
            writer.write(odom, receive, store.serialize_cdr(odometry_msg(store, float(ti), si), ODOMETRY_TYPE))
            cmd = ackermann_msg(store, wall0 + float(ti), ui, float(si[3] + ui[1] * DT))
            writer.write(drive, receive + 1000, store.serialize_cdr(cmd, ACKERMANN_TYPE))
    recorded = read_drive(bag_dir)
    assert any("different clocks" in w for w in recorded.warnings), recorded.warnings
    assert abs(recorded.cmd_t_s[0] - recorded.odom_t_s[0]) < 0.01
    assert recorded.duration_s == pytest.approx(t[-1] - t[0], abs=0.01)
    np.testing.assert_allclose(np.diff(recorded.cmd_t_s).mean(), DT, rtol=0.01)


def test_fit_reads_a_two_clock_bag(tmp_path, params, capsys):
    from mbrl_control.apps.cli import main

    test_odometry_in_sim_time_and_commands_in_wall_time_are_read_on_one_clock(tmp_path, params)
    config = tmp_path / "fit.yaml"
    config.write_text("fit:\n  identify:\n    physics: kinematic\n    max_iterations: 5\n"
                      "  residual:\n    steps: 20\n    members: 1\n    multistep_steps: 0\n")
    assert main(["fit", str(tmp_path / "demo_bag"), "--out", str(tmp_path / "m.pt"), "--config", str(config),
                 "--quiet"]) == 0, capsys.readouterr().err
    assert Path(tmp_path / "m.pt").is_file()
