"""Opening bags: raw messages of chosen topics from rosbag2 directories or bare .mcap / .db3 files.

rosbags reads them; the bag's own message definitions overlay the built-in typestore; damaged
MCAP storage is salvaged by :mod:`.mcap_recovery`, a damaged sqlite3 bag keeps what was read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

from mbrl_control import MbrlError
from mbrl_control.bag.mcap_recovery import scan_mcap
from mbrl_control.bag.messages import typestore


@dataclass
class BagContents:
    """Raw messages of the selected topics, with what is needed to decode them."""

    topics: dict[str, str]  # every topic of the bag -> message type
    messages: dict[str, list[tuple[int, bytes]]]  # selected topic -> (bag receive time ns, serialized bytes)
    store: Any
    problems: list[str]
    truncated: bool = False
    lost_messages: int | None = 0  # messages of the selected topics lost to damage (None: unknown, a cut-off file)
    lost_by_topic: dict[str, int] | None = None
    encoding: str = "cdr"  # how the bytes are serialized: cdr (rosbag2) | ros1 (a ROS 1 bag)

    def deserialize(self, raw: bytes, msgtype: str):
        """One message, decoded with the bag's own types."""
        if self.encoding == "ros1":
            return self.store.deserialize_ros1(raw, msgtype)
        return self.store.deserialize_cdr(raw, msgtype)


def _storage_files(path: Path) -> list[Path]:
    """The storage files of a bag path (a directory's .mcap/.db3 in name order, or the file)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
    return [path]


def load_bag(path: Path, select: Callable[[dict[str, str]], set[str]]) -> BagContents:
    """Raw messages of the topics ``select`` picks from the bag's topics; damaged MCAP is salvaged."""
    if not path.exists():
        raise MbrlError(f"bag not found: {path}")
    if path.is_file() and path.suffix == ".bag":
        return _read_rosbag1(path, select)
    if path.is_file() and path.suffix not in (".mcap", ".db3"):
        raise MbrlError(f"{path}: not a bag (expected a rosbag2 directory, a .mcap or .db3 file, or a ROS 1 .bag)")
    files = _storage_files(path)
    if path.is_dir() and not files:
        raise MbrlError(f"{path}: no .mcap or .db3 storage file in the bag directory")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        if len(files) > 1:
            raise MbrlError(f"{path}: bag directory without metadata.yaml holds several storage files; open one")
        return load_bag(files[0], select)
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

    def __init__(self, message: str, partial: BagContents | None = None) -> None:
        super().__init__(message)
        self.partial = partial


def _read_with_rosbags(path: Path, select: Callable[[dict[str, str]], set[str]]) -> BagContents:
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
        contents = BagContents(topics, {t: [] for t in chosen}, None, [])
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


def _read_rosbag1(path: Path, select: Callable[[dict[str, str]], set[str]]) -> BagContents:
    """A ROS 1 bag (``rosbags.rosbag1``): the same contents, its messages in ROS 1 serialization and its
    types from the bag's own definitions (a ROS 1 Header has ``seq``). A damaged file keeps the messages
    read before the damage, with a warning."""
    from rosbags.rosbag1 import Reader

    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - ReaderError, struct errors, ...
        raise MbrlError(f"{path}: cannot read ROS 1 bag: {_one_line(exc)}") from None
    try:
        conns = reader.connections
        topics = {c.topic: c.msgtype for c in conns}
        chosen = select(topics)
        contents = BagContents(topics, {t: [] for t in chosen}, None, [], encoding="ros1")
        contents.store = _bag_typestore([(c.msgtype, "MSG", c.msgdef.data) for c in conns], contents.problems)
        try:
            for conn, t_ns, raw in reader.messages(connections=[c for c in conns if c.topic in chosen]):
                contents.messages[conn.topic].append((int(t_ns), bytes(raw)))
        except Exception as exc:  # noqa: BLE001
            if not any(contents.messages.values()):
                raise MbrlError(f"{path}: cannot read ROS 1 bag: {_one_line(exc)}") from None
            contents.problems.append(f"damaged bag ({_one_line(exc)}); using the messages read before the damage")
            contents.truncated, contents.lost_messages = True, None
        return contents
    finally:
        try:
            reader.close()
        except Exception:  # noqa: BLE001
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


def _salvage_mcap(path: Path, files: list[Path], select: Callable[[dict[str, str]], set[str]],
                  failure: _ReadFailure) -> BagContents:
    """Recover every intact chunk of damaged MCAP storage; count what is lost (:mod:`.mcap_recovery`)."""
    scan = scan_mcap(files, failure)
    topics, definitions = scan.topics_and_definitions()
    if not scan.messages:
        raise MbrlError(f"{path}: damaged bag with no recoverable messages ({failure})")
    chosen = select(topics)
    contents = BagContents(topics, {t: [] for t in chosen}, None, [], truncated=True)
    contents.store = _bag_typestore(definitions, contents.problems)
    by_channel = {cid: topic for cid, (topic, _) in scan.channels.items() if topic in chosen}
    for channel, t_ns, raw in scan.messages:
        if channel in by_channel:
            contents.messages[by_channel[channel]].append((t_ns, raw))
    kept = sum(len(v) for v in contents.messages.values())
    last = max((t for v in contents.messages.values() for t, _ in v), default=0)
    first = min((t for v in contents.messages.values() for t, _ in v), default=0)
    lost = scan.lost()
    if lost is None:
        contents.lost_messages, contents.lost_by_topic = None, None
        what = "using the valid prefix of the damaged part; an unknown number of messages lost (the file is cut off)"
    else:
        per_topic = {topic: 0 for topic in chosen}
        for cid, n in lost.items():
            if cid in by_channel:
                per_topic[by_channel[cid]] += n
        contents.lost_messages, contents.lost_by_topic = sum(per_topic.values()), per_topic
        what = f"{contents.lost_messages} messages lost" + (
            " (" + ", ".join(f"{t}: {n}" for t, n in sorted(per_topic.items())) + ")" if contents.lost_messages else "")
    reasons = scan.reasons or [str(failure)]
    shown = "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else "")
    verified = "" if scan.checksummed else " (the file has no chunk checksums: damage inside a message cannot be detected)"
    contents.problems.append(f"truncated or damaged ({shown}); recovered {kept} messages over {(last - first) * 1e-9:.2f} s "
                             f"from {scan.chunks_kept} intact chunks, {scan.damaged_chunks} damaged; {what}{verified}")
    return contents
