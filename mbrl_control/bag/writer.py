"""Writing a run's telemetry (odometry, commands, planned paths) as a rosbag2 with MCAP storage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from mbrl_control.bag.messages import (ACKERMANN_TYPE, ODOMETRY_TYPE, PATH_TYPE, ackermann_msg, odometry_msg, path_msg,
                                       typestore)
from mbrl_control.models.layout import S, U


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
