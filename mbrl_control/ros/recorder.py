"""A telemetry recorder node: subscribes to topics as raw CDR bytes and writes a rosbag2 (MCAP) file.

Like ``ros2 bag record``: every message keeps its serialized bytes exactly as received
(``raw=True`` subscriptions, no decode/re-encode), stamped with the recorder's receive time. The
callbacks only append to a buffer (cheap under the GIL, nothing on the control path); the file is
written by :meth:`TelemetryRecorder.write`, with rosbags' Writer and the project typestore of
:mod:`mbrl_control.bag` (which knows ackermann_msgs).
"""

from __future__ import annotations

import shutil
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from mbrl_control.ros.env import ensure_ros_env

ensure_ros_env()

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from rosbags.rosbag2 import StoragePlugin  # noqa: E402

from mbrl_control.bag import typestore  # noqa: E402
from mbrl_control.bag.writer import ChecksummedWriter  # noqa: E402

MAX_BUFFERED = 2_000_000
"""Messages kept before the oldest are dropped (about 25 minutes of the demo's topics)."""


@dataclass(frozen=True)
class TopicSpec:
    topic: str  # resolved name, e.g. /odom
    msg_class: type
    qos: QoSProfile


def msgtype_name(msg_class: type) -> str:
    """'nav_msgs/msg/Odometry' of a generated rclpy message class."""
    return f"{msg_class.__module__.split('.')[0]}/msg/{msg_class.__name__}"


class TelemetryRecorder(Node):
    """Buffers raw messages of the given topics; :meth:`write` puts them in an MCAP file."""

    def __init__(self, topics: list[TopicSpec], context: Context | None = None, node_name: str = "telemetry_recorder") -> None:
        super().__init__(node_name, context=context)
        self.topics = list(topics)
        self._buffer: deque[tuple[int, int, bytes]] = deque(maxlen=MAX_BUFFERED)  # (topic index, receive ns, CDR)
        self._lock = threading.Lock()
        self.dropped = 0
        group = MutuallyExclusiveCallbackGroup()
        for index, spec in enumerate(self.topics):
            self.create_subscription(spec.msg_class, spec.topic, self._callback(index), spec.qos, callback_group=group,
                                     raw=True)

    def _callback(self, index: int):
        def on_message(data: bytes) -> None:
            entry = (index, self.get_clock().now().nanoseconds, data)
            with self._lock:
                self.dropped += len(self._buffer) == MAX_BUFFERED  # the deque drops the oldest
                self._buffer.append(entry)
        return on_message

    def counts(self) -> dict[str, int]:
        with self._lock:
            entries = list(self._buffer)
        counts = {spec.topic: 0 for spec in self.topics}
        for index, _, _ in entries:
            counts[self.topics[index].topic] += 1
        return counts

    def take(self) -> list[tuple[int, int, bytes]]:
        """Everything buffered so far (topic index, receive time ns, CDR bytes); the buffer is emptied."""
        with self._lock:
            entries = list(self._buffer)
            self._buffer.clear()
        return entries

    def write(self, path: str | Path) -> dict[str, int]:
        """Write everything buffered so far to ``path`` (a single .mcap file); message counts per topic."""
        return write_mcap(Path(path), self.topics, self.take())


def write_mcap(path: Path, topics: list[TopicSpec], entries: list[tuple[int, int, bytes]]) -> dict[str, int]:
    """A rosbag2 MCAP file at ``path`` holding ``entries`` (topic index, time ns, CDR bytes) in time order."""
    store = typestore()
    bag_dir = path.with_name(f".{path.stem}.bagdir")
    if bag_dir.exists():
        shutil.rmtree(bag_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = {spec.topic: 0 for spec in topics}
    writer = ChecksummedWriter(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP)
    try:
        writer.open()
        try:
            connections = [writer.add_connection(spec.topic, msgtype_name(spec.msg_class), typestore=store) for spec in topics]
            for index, t_ns, data in sorted(entries, key=lambda e: e[1]):
                writer.write(connections[index], t_ns, data)
                counts[topics[index].topic] += 1
        finally:
            writer.close()
        (bag_dir / f"{bag_dir.name}.mcap").replace(path)  # atomic: the whole bag or none
    finally:
        shutil.rmtree(bag_dir, ignore_errors=True)  # also a partial one (a full disk)
    return counts
