"""Issue 15, case 4: nothing recorded is lost without saying so.

* A damaged MCAP bag keeps every intact chunk, also after the damage; the messages reported as
  recovered are exactly the undamaged ones (compared with the original), and the lost count is
  exact (acceptance 2: 100 single-byte flips and 20 truncation points on a 2-lap bag, read in-process
  by the reader ``fit`` uses, and one real ``mbrl-control fit`` on a damaged copy).
* Many flipped bytes end in one clear MbrlError, never a traceback.
* A bag whose odometry is stamped in sim time and whose commands carry wall-clock stamps (the
  demo's own ``telemetry.mcap``) is read on one clock.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin

from mbrl_control import MbrlError
from mbrl_control.bag import read_drive
from mbrl_control.bag.messages import ACKERMANN_TYPE, ODOMETRY_TYPE, ackermann_msg, odometry_msg, typestore
from mbrl_control.bag.storage import BagContents, load_bag
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


# --------------------------------------------------- acceptance 2: 100 single-byte flips, 20 cuts, a 2-lap bag
FLIPS = 100
CUTS = 20
_OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_DATA_END = 0x04, 0x05, 0x06, 0x0F
_CHUNK_HEADER_BYTES = 9 + 8 + 8 + 8 + 4 + 4 + 8  # op, length, times, sizes, checksum (the compression string is empty)


@dataclass
class ChunkLayout:
    """Where one chunk record lies in the original file, and its messages as (key, end of the record)."""

    start: int
    end: int
    messages: list[tuple[tuple[str, int, bytes], int]]

    def keys(self) -> Counter:
        return Counter(key for key, _ in self.messages)


def _u(buf: bytes, pos: int, size: int) -> int:
    return int.from_bytes(buf[pos:pos + size], "little")


def mcap_layout(buf: bytes) -> list[ChunkLayout]:
    """The chunks of a sound, uncompressed MCAP file and the messages of TOPICS in each (a reference
    parser of its own, independent of :mod:`mbrl_control.bag.mcap_recovery`)."""
    topics: dict[int, str] = {}
    chunks: list[ChunkLayout] = []
    pos = 8
    while buf[pos] != _OP_DATA_END:
        end = pos + 9 + _u(buf, pos + 1, 8)
        if buf[pos] == _OP_CHANNEL:
            topics[_u(buf, pos + 9, 2)] = buf[pos + 17:pos + 17 + _u(buf, pos + 13, 4)].decode()
        elif buf[pos] == _OP_CHUNK:
            chunks.append(ChunkLayout(pos, end, _chunk_messages(buf, pos, end, topics)))
        pos = end
    return chunks


def _chunk_messages(buf: bytes, start: int, end: int, topics: dict[int, str]) -> list:
    compression_len = _u(buf, start + 37, 4)
    assert compression_len == 0, "the reference parser reads uncompressed chunks (the project writes those)"
    pos = start + 41 + 8
    assert pos + _u(buf, start + 41, 8) == end
    found = []
    while pos < end:
        stop = pos + 9 + _u(buf, pos + 1, 8)
        if buf[pos] == _OP_CHANNEL:
            topics[_u(buf, pos + 9, 2)] = buf[pos + 17:pos + 17 + _u(buf, pos + 13, 4)].decode()
        elif buf[pos] == _OP_MESSAGE and topics.get(_u(buf, pos + 9, 2)) in TOPICS:
            key = (topics[_u(buf, pos + 9, 2)], _u(buf, pos + 15, 8), bytes(buf[pos + 31:stop]))
            found.append((key, stop))
        pos = stop
    return found


@pytest.fixture(scope="module")
def two_laps(tmp_path_factory) -> tuple[Path, Counter, list[ChunkLayout]]:
    """The telemetry of a 2-lap ``sim`` run, its messages and its chunk layout."""
    from mbrl_control.apps.cli import main

    out = tmp_path_factory.mktemp("two_laps")
    assert main(["sim", "--controller", "pure_pursuit", "--laps", "2", "--quiet", "--out", str(out)]) == 0
    path = out / "telemetry.mcap"
    assert json.loads((out / "summary.json").read_text())["laps_completed"] == 2
    reference = Counter(_messages(load_bag(path, _select)))
    layout = mcap_layout(path.read_bytes())
    assert sum((c.keys() for c in layout), Counter()) == reference and len(layout) > 50
    return path, reference, layout


def _fit_read(path: Path, monkeypatch) -> tuple[BagContents | None, object]:
    """Read ``path`` as ``fit`` does (``read_drive``), keeping the raw contents it recovered; an MbrlError
    is returned, any other exception fails the test."""
    from mbrl_control.bag import reader

    seen: list[BagContents] = []

    def recording(*args, **kwargs):
        seen.append(load_bag(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(reader, "load_bag", recording)
    try:
        drive = read_drive(path)
    except MbrlError as exc:
        assert "\n" not in str(exc)
        return (seen[0] if seen else None), exc
    assert drive.lost_messages == seen[0].lost_messages
    return seen[0], drive


def _expected_after_flip(at: int, reference: Counter, layout: list[ChunkLayout]) -> tuple[str, list[Counter]]:
    """Where the flip landed and the acceptable recoveries: every undamaged message, and none of a chunk
    whose checksummed records the flip hit (a damaged chunk is dropped whole). A flip in a chunk
    record's header (times, sizes, checksum) damages no message: they are all recovered, or that chunk
    is dropped when the reader needed the field to find or verify it."""
    for chunk in layout:
        if chunk.start <= at < chunk.end:
            if at < chunk.start + _CHUNK_HEADER_BYTES:
                return "chunk header", [reference, reference - chunk.keys()]
            return "chunk records", [reference - chunk.keys()]
    return "outside the chunks", [reference]


def test_100_single_byte_flips_recover_exactly_the_undamaged_messages(two_laps, tmp_path, monkeypatch):
    path, reference, layout = two_laps
    original = path.read_bytes()
    rng = random.Random(1502)
    damaged = tmp_path / "flipped.mcap"
    landed: Counter = Counter()
    for trial in range(FLIPS):
        data = bytearray(original)
        at = rng.randrange(len(data))
        data[at] ^= rng.randrange(1, 256)
        damaged.write_bytes(bytes(data))
        contents, drive = _fit_read(damaged, monkeypatch)
        assert not isinstance(drive, MbrlError), f"flip at byte {at}: {drive}"
        got = Counter(_messages(contents))
        where, acceptable = _expected_after_flip(at, reference, layout)
        assert got in acceptable, (trial, at, where, [(sum((e - got).values()), sum((got - e).values())) for e in acceptable])
        lost = sum(reference.values()) - sum(got.values())
        assert contents.lost_messages == lost, (trial, at, where, contents.lost_messages, lost)
        if lost:
            assert any(f"{lost} messages lost" in p for p in drive.warnings), drive.warnings
        landed[where] += 1
    assert landed["chunk records"] >= FLIPS // 2 and sum(landed.values()) == FLIPS, landed


def _expected_after_cut(at: int, layout: list[ChunkLayout]) -> Counter:
    """Every message of the chunks before the cut, and the complete records of the chunk it cuts."""
    kept = Counter()
    for chunk in layout:
        kept.update(key for key, end in chunk.messages if end <= at)
    return kept


def test_20_truncation_points_keep_every_complete_message_and_say_what_is_lost(two_laps, tmp_path, monkeypatch):
    path, reference, layout = two_laps
    original = path.read_bytes()
    rng = random.Random(1503)
    cut = tmp_path / "cut.mcap"
    for k in range(CUTS):
        at = int(len(original) * (k + rng.random()) / CUTS)
        cut.write_bytes(original[:at])
        contents, drive = _fit_read(cut, monkeypatch)
        expected = _expected_after_cut(at, layout)
        if isinstance(drive, MbrlError):  # too little left to fit from: one clear line
            assert sum(expected.values()) < 50, (at, drive)
            continue
        got = Counter(_messages(contents))
        assert got == expected, (k, at, sum((expected - got).values()), sum((got - expected).values()))
        if contents.lost_messages is None:  # cut inside the data: how much followed is unknown, and said so
            assert any("unknown number of messages lost" in p for p in drive.warnings), drive.warnings
        else:  # cut after the data (in the summary): the count is exact
            assert contents.lost_messages == sum(reference.values()) - sum(got.values())
            assert got == reference


def test_fit_on_a_damaged_two_lap_bag_reports_the_lost_messages(two_laps, tmp_path):
    """One real ``mbrl-control fit`` (its own process) on a copy with a flipped byte in the middle chunk."""
    path, reference, layout = two_laps
    chunk = layout[len(layout) // 2]
    data = bytearray(path.read_bytes())
    data[(chunk.start + chunk.end) // 2] ^= 0x5A
    damaged = tmp_path / "damaged.mcap"
    damaged.write_bytes(bytes(data))
    config = tmp_path / "fit.yaml"
    config.write_text("fit:\n  identify:\n    physics: kinematic\n    max_iterations: 5\n"
                      "  residual:\n    steps: 20\n    members: 1\n    multistep_steps: 0\n")
    result = subprocess.run([sys.executable, "-m", "mbrl_control.apps.cli", "fit", str(damaged), "--out",
                             str(tmp_path / "m.pt"), "--config", str(config), "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lost = sum(chunk.keys().values())
    assert f"{lost} messages lost" in result.stderr, result.stderr
    assert (tmp_path / "m.pt").is_file() and json.loads(result.stdout[:result.stdout.rindex("}") + 1])["transitions"] > 0


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
