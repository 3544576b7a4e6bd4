"""Damaged-MCAP recovery: every intact chunk is kept, also those after the damage; what is lost is counted.

Used when rosbags cannot open or finish a file. Chunks are found through the file's summary
(chunk indexes) when it is intact, else by a sequential scan that re-synchronises on the next
valid chunk after a damaged record. A chunk is kept when it decompresses to its recorded size,
matches its CRC (when the writer stored one; the project's writer does) and parses completely;
a damaged chunk is dropped whole. The complete records of a cut-off uncompressed or zstd chunk
at the end of a truncated file are kept (an incomplete lz4 chunk yields nothing). Lost messages
per channel are counted from the statistics record (or the message indexes after each chunk):
``McapScan.lost`` says exactly how many, or that the count is unknown (a cut-off file).
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from mbrl_control import MbrlError

_MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_DATA_END = 0x02, 0x03, 0x04, 0x05, 0x06, 0x0F
_OP_MESSAGE_INDEX, _OP_CHUNK_INDEX, _OP_STATISTICS = 0x07, 0x08, 0x0B
_MAX_OP = 0x0F
_MAX_CHUNK_BYTES = 1 << 30  # a larger "uncompressed size" is damage (it would be allocated)
_FOOTER_SIZE = 9 + 20
_CHUNK_FIXED = 8 + 8 + 8 + 4  # start, end, uncompressed size, crc (then the compression string, the size)


@dataclass
class McapScan:
    """What a sequential scan of an MCAP file recovered (in file order)."""

    schemas: dict = field(default_factory=dict)  # id -> (name, encoding, data)
    channels: dict = field(default_factory=dict)  # id -> (topic, schema id)
    messages: list = field(default_factory=list)  # (channel id, log time ns, data)
    reasons: list[str] = field(default_factory=list)  # per file: each damage found
    expected: dict = field(default_factory=dict)  # channel id -> messages the file(s) held, where known
    expected_known: bool = True  # False: part of a file is gone (cut off) and its message count with it
    damaged_chunks: int = 0
    chunks_kept: int = 0
    checksummed: bool = True  # every kept chunk was verified by its CRC

    def lost(self) -> dict | None:
        """Channel id -> messages lost (expected minus recovered), or None when the count is unknown."""
        if not self.expected_known:
            return None
        got: dict = {}
        for channel, _, _ in self.messages:
            got[channel] = got.get(channel, 0) + 1
        return {cid: max(0, n - got.get(cid, 0)) for cid, n in self.expected.items()}

    def topics_and_definitions(self) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
        """Topic -> message type, and (type, format, text) of each recovered schema (rosbags' naming)."""
        topics, definitions = {}, []
        for topic, schema_id in self.channels.values():
            if schema_id in self.schemas:
                name, encoding, text = self.schemas[schema_id]
                topics[topic] = name
                definitions.append((name, {"ros2msg": "MSG", "ros2idl": "IDL", "omgidl": "IDL"}.get(encoding, "NONE"), text))
        return topics, definitions


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


def _partial_chunk(body: bytes, scan: McapScan) -> None:
    """Complete records of a chunk the file cut off (uncompressed or zstd)."""
    rec = _Reader(body)
    try:
        header = _chunk_header(rec)
        data = _decompress(bytes(body[rec.pos:rec.pos + header["size"]]), header["compression"], complete=False)
    except (ValueError, UnicodeDecodeError):
        return
    _parse_inner(data, scan, keep_partial=True)


def _parse_inner(data: bytes, scan: McapScan, keep_partial: bool = False) -> str | None:
    """The schemas, channels and messages of a chunk's records, added to ``scan`` only if all parse
    (``keep_partial``: the complete records before the first bad one). Returns the problem, if any."""
    found = McapScan()
    pos, end, problem = 0, len(data), None
    while pos < end:
        if end - pos < 9:
            problem = "record header cut off"
            break
        op = data[pos]
        stop = pos + 9 + int.from_bytes(data[pos + 1:pos + 9], "little")
        if stop > end or op == 0 or op > _MAX_OP or op == _OP_CHUNK:
            problem = f"bad record at byte {pos} of the chunk"
            break
        try:
            _parse_record(op, data[pos + 9:stop], found)
        except (ValueError, UnicodeDecodeError) as exc:
            problem = f"bad record at byte {pos} of the chunk: {exc}"
            break
        pos = stop
    if problem is None or keep_partial:
        scan.schemas.update(found.schemas)
        scan.channels.update(found.channels)
        scan.messages.extend(found.messages)
    return problem


def _parse_record(op: int, body: bytes, scan: McapScan) -> None:
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


def _map_u16_u64(rec: _Reader) -> dict[int, int]:
    size = rec.uint(4)
    stop = rec.pos + size
    if stop > len(rec.buf) or size % 10:
        raise ValueError("bad map")
    out = {}
    while rec.pos < stop:
        key = rec.uint(2)
        out[key] = rec.uint(8)
    return out


def _chunk_at(buf: bytes, pos: int, length: int | None = None) -> tuple[dict, int] | None:
    """(chunk header, record end) of a plausible chunk record at ``pos`` (fields consistent, inside the file)."""
    end = len(buf)
    if pos + 9 + _CHUNK_FIXED + 4 + 8 > end or buf[pos] != _OP_CHUNK:
        return None
    size = int.from_bytes(buf[pos + 1:pos + 9], "little")
    stop = pos + 9 + size
    if stop > end or (length is not None and 9 + size != length):
        return None
    rec = _Reader(memoryview(buf)[pos + 9:stop])
    try:
        header = _chunk_header(rec)
    except (ValueError, UnicodeDecodeError):
        return None
    if header["compression"] not in ("", "zstd", "lz4") or rec.pos + header["size"] != size:
        return None
    if header["uncompressed"] > _MAX_CHUNK_BYTES or (header["compression"] == "" and header["uncompressed"] != header["size"]):
        return None
    header["data"] = (pos + 9 + rec.pos, stop)
    return header, stop


def _read_chunk(buf: bytes, pos: int, scan: McapScan, length: int | None = None) -> tuple[int | None, str | None]:
    """Keep the chunk at ``pos`` if it is intact: (record end or None if there is no chunk, the problem)."""
    found = _chunk_at(buf, pos, length)
    if found is None:
        return None, f"no valid chunk record at byte {pos}"
    header, stop = found
    lo, hi = header["data"]
    try:
        data = _decompress(bytes(buf[lo:hi]), header["compression"], complete=True)
    except Exception as exc:  # noqa: BLE001 - zstd / lz4 raise their own types on damaged input
        return stop, f"chunk at byte {pos} does not decompress ({exc})"
    if len(data) != header["uncompressed"]:
        return stop, f"chunk at byte {pos} has the wrong size"
    if header["crc"] and zlib.crc32(data) != header["crc"]:
        return stop, f"chunk at byte {pos} fails its checksum"
    problem = _parse_inner(data, scan, keep_partial=not header["crc"])  # no checksum: keep what parses
    if problem:
        return stop, f"chunk at byte {pos}: {problem}"
    scan.chunks_kept += 1
    scan.checksummed &= bool(header["crc"])
    return stop, None


def _message_index_counts(buf: bytes, pos: int) -> tuple[dict[int, int], int]:
    """Messages per channel listed by the message index records from ``pos`` (those after a chunk), and their end."""
    counts: dict[int, int] = {}
    end = len(buf)
    while pos + 9 <= end and buf[pos] == _OP_MESSAGE_INDEX:
        stop = pos + 9 + int.from_bytes(buf[pos + 1:pos + 9], "little")
        if stop > end:
            break
        rec = _Reader(buf[pos + 9:stop])
        try:
            channel, size = rec.uint(2), rec.uint(4)
        except ValueError:
            break
        if size % 16 or rec.pos + size != stop - pos - 9:
            break
        counts[channel] = counts.get(channel, 0) + size // 16
        pos = stop
    return counts, pos


def _read_summary(buf: bytes) -> dict | None:
    """Chunk indexes, statistics, schemas and channels of the summary section, if footer and summary are sound."""
    end = len(buf) - len(_MCAP_MAGIC)
    start = end - _FOOTER_SIZE
    if start < len(_MCAP_MAGIC) or buf[end:] != _MCAP_MAGIC or buf[start] != _OP_FOOTER \
            or int.from_bytes(buf[start + 1:start + 9], "little") != 20:
        return None
    summary_start = int.from_bytes(buf[start + 9:start + 17], "little")
    summary_offsets = int.from_bytes(buf[start + 17:start + 25], "little")
    summary_end = summary_offsets if summary_offsets else start
    if not len(_MCAP_MAGIC) < summary_start <= summary_end <= start:
        return None
    out = {"chunks": [], "stats": None, "scan": McapScan()}
    pos = summary_start
    try:
        while pos < summary_end:
            op = buf[pos]
            stop = pos + 9 + int.from_bytes(buf[pos + 1:pos + 9], "little")
            if stop > summary_end or op == 0 or op > _MAX_OP:
                return None
            rec = _Reader(buf[pos + 9:stop])
            if op == _OP_CHUNK_INDEX:
                rec.uint(8), rec.uint(8)
                offset, length = rec.uint(8), rec.uint(8)
                out["chunks"].append((offset, length))
            elif op == _OP_STATISTICS:
                rec.uint(8), rec.uint(2), rec.uint(4), rec.uint(4), rec.uint(4), rec.uint(4), rec.uint(8), rec.uint(8)
                out["stats"] = _map_u16_u64(rec)
            elif op in (_OP_SCHEMA, _OP_CHANNEL):
                _parse_record(op, buf[pos + 9:stop], out["scan"])
            pos = stop
    except (ValueError, UnicodeDecodeError):
        return None
    if not out["chunks"] or any(not len(_MCAP_MAGIC) <= o < summary_start or o + n > summary_start for o, n in out["chunks"]):
        return None
    return out


def _scan_with_summary(buf: bytes, summary: dict, scan: McapScan, name: str) -> None:
    """Every chunk at the offset its index gives; a damaged one is dropped, its messages counted as lost."""
    scan.schemas.update(summary["scan"].schemas)
    scan.channels.update(summary["scan"].channels)
    indexed: dict[int, int] = {}
    for offset, length in sorted(summary["chunks"]):
        _, problem = _read_chunk(buf, offset, scan, length)
        counts, _ = _message_index_counts(buf, offset + length)
        for cid, n in counts.items():
            indexed[cid] = indexed.get(cid, 0) + n
        if problem:
            scan.damaged_chunks += 1
            scan.reasons.append(f"{name}: {problem}")
    expected = summary["stats"] if summary["stats"] is not None else indexed
    for cid, n in expected.items():
        scan.expected[cid] = scan.expected.get(cid, 0) + n


def _next_chunk(buf: bytes, pos: int) -> int | None:
    """The start of the next plausible chunk record after ``pos`` (re-synchronisation after damage)."""
    probe = pos
    while True:
        probe = buf.find(bytes([_OP_CHUNK]), probe + 1)
        if probe < 0:
            return None
        if _chunk_at(buf, probe) is not None:
            return probe


def _scan_sequential(buf: bytes, scan: McapScan, name: str) -> None:
    """Record by record from the start; after damage, on at the next valid chunk."""
    pos, end = len(_MCAP_MAGIC), len(buf)
    counted: dict[int, int] = {}
    exact = True
    while pos < end:
        if end - pos < 9:
            scan.reasons.append(f"{name}: record header cut off at byte {pos}")
            exact = False
            break
        op = buf[pos]
        stop = pos + 9 + int.from_bytes(buf[pos + 1:pos + 9], "little")
        if op in (_OP_DATA_END, _OP_FOOTER) and stop <= end:
            break
        if op == _OP_CHUNK:
            if stop > end:
                _partial_chunk(buf[pos + 9:end], scan)
                scan.reasons.append(f"{name}: file cut off at byte {end} inside a chunk starting at byte {pos}")
                exact = False
                break
            after, problem = _read_chunk(buf, pos, scan)
            if after is not None:
                counts, after_index = _message_index_counts(buf, after)
                if problem:
                    scan.damaged_chunks += 1
                    scan.reasons.append(f"{name}: {problem}")
                    if not counts:
                        exact = False  # its messages are lost without a count
                for cid, n in counts.items():
                    counted[cid] = counted.get(cid, 0) + n
                pos = after_index
                continue
        elif 0 < op <= _MAX_OP and stop <= end:
            if op in (_OP_SCHEMA, _OP_CHANNEL):
                try:
                    _parse_record(op, buf[pos + 9:stop], scan)
                except (ValueError, UnicodeDecodeError):
                    pass
            pos = stop
            continue
        # a damaged record header, or the end of a cut-off file: on at the next chunk that is sound
        nxt = _next_chunk(buf, pos)
        exact = False
        if nxt is None and 0 < op <= _MAX_OP and stop > end:
            scan.reasons.append(f"{name}: file cut off at byte {end} inside a record starting at byte {pos}")
            break
        scan.reasons.append(f"{name}: damaged record at byte {pos}" + ("" if nxt is not None else "; nothing valid after it"))
        scan.damaged_chunks += 1
        if nxt is None:
            break
        pos = nxt
    else:
        scan.reasons.append(f"{name}: file ends without the MCAP footer")
    if not exact:
        scan.expected_known = False
    for cid, n in counted.items():
        scan.expected[cid] = scan.expected.get(cid, 0) + n


def scan_mcap(files: list[Path], failure: Exception) -> McapScan:
    """Scan MCAP storage files for every intact chunk; ``reasons`` lists each damage found.

    ``failure`` (why the regular reader gave up) is quoted when a file is no MCAP at all.
    """
    scan = McapScan()
    for file in files:
        data = file.read_bytes()
        if not data.startswith(_MCAP_MAGIC):
            raise MbrlError(f"{file}: not an MCAP file ({failure})")
        summary = _read_summary(data)
        if summary is not None:
            _scan_with_summary(data, summary, scan, file.name)
        else:
            _scan_sequential(data, scan, file.name)
    return scan
