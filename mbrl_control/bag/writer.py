"""Writing a run's telemetry (odometry, commands, planned paths) as a rosbag2 with MCAP storage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import zlib

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import McapWriter

from mbrl_control.bag.messages import (ACKERMANN_TYPE, ODOMETRY_TYPE, PATH_TYPE, ackermann_msg, odometry_msg, path_msg,
                                       typestore)
from mbrl_control.models.actuation import speed_after_one_period
from mbrl_control.models.layout import S, U


CHUNK_BYTES = 1 << 13
"""MCAP chunk size: damage to a file loses the messages of the chunks it hits (~8 KiB, about ten odometry messages, each)."""


class _ChecksummedMcapWriter(McapWriter):
    """rosbags' MCAP storage writer with a CRC-32 on every chunk and smaller chunks, so that a reader can
    tell intact chunks from damaged ones and a damaged file loses little (:mod:`.mcap_recovery`)."""

    def close_chunk(self) -> None:
        crc = zlib.crc32(self.chunk.bio.getbuffer())
        super().close_chunk()
        chunk_start = int.from_bytes(self.chunks[-1].getbuffer()[16:24], "little")  # from the chunk index
        end = self.bio.tell()
        self.bio.seek(chunk_start + 9 + 8 + 8 + 8)  # op, length, start time, end time, uncompressed size
        self.bio.write(crc.to_bytes(4, "little"))
        self.bio.seek(end)

    def write(self, connection, timestamp: int, data) -> None:
        super().write(connection, timestamp, data)
        if self.chunk.bio.tell() > CHUNK_BYTES:
            self.close_chunk()


class ChecksummedWriter(Writer):
    """rosbags' rosbag2 ``Writer`` whose MCAP storage has chunk checksums (the project writes all its bags so)."""

    STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: _ChecksummedMcapWriter}


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
        self._writer = ChecksummedWriter(self._bag_dir, version=9, storage_plugin=StoragePlugin.MCAP)
        self._topics = (odom_topic, drive_topic, path_topic)

    error: OSError | None = None
    """The first write failure (a full disk, ...): recording stopped there, the run goes on; the
    caller reports it. The bag is then not moved into place (the partial one is removed)."""

    def __enter__(self) -> "TelemetryWriter":
        try:
            self._writer.open()
            odom, drive, plan = self._topics
            self._odom = self._writer.add_connection(odom, ODOMETRY_TYPE, typestore=self.store)
            self._drive = self._writer.add_connection(drive, ACKERMANN_TYPE, typestore=self.store)
            self._plan = self._writer.add_connection(plan, PATH_TYPE, typestore=self.store)
        except OSError as exc:
            self._fail(exc)
        return self

    def __exit__(self, *exc) -> None:
        if self.error is None:
            try:
                self._writer.close()
                if self._bag_dir != self.path:
                    (self._bag_dir / f"{self._bag_dir.name}.mcap").replace(self.path)
            except OSError as err:
                self._fail(err)
        else:
            try:  # best effort: release the file
                self._writer.close()
            except Exception:  # noqa: BLE001 - the bag is dropped anyway
                pass
        if self._bag_dir != self.path or self.error is not None:
            shutil.rmtree(self._bag_dir, ignore_errors=True)

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            self.error = exc if exc.filename else OSError(exc.errno, exc.strerror or str(exc), str(self.path))

    def _write(self, conn, t_s: float, msg, msgtype: str) -> None:
        if self.error is not None:
            return
        try:
            self._writer.write(conn, int(round(t_s * 1e9)), self.store.serialize_cdr(msg, msgtype))
        except OSError as exc:
            self._fail(exc)

    def odometry(self, t_s: float, state: np.ndarray) -> None:
        self._write(self._odom, t_s, odometry_msg(self.store, t_s, state), ODOMETRY_TYPE)

    def command(self, t_s: float, control: np.ndarray, speed_mps: float) -> None:
        self._write(self._drive, t_s, ackermann_msg(self.store, t_s, control, speed_mps), ACKERMANN_TYPE)

    def planned_path(self, t_s: float, xy: np.ndarray) -> None:
        self._write(self._plan, t_s, path_msg(self.store, t_s, xy), PATH_TYPE)


def command_speed(state: np.ndarray, control: np.ndarray, dt_s: float) -> float:
    """The speed set-point sent with an acceleration command: where the speed will be after dt."""
    return float(speed_after_one_period(state[S.V], control[U.ACCEL], dt_s))
