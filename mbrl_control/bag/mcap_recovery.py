"""Damaged-MCAP recovery: a sequential scan of MCAP records that keeps everything before the damage.

Used when rosbags cannot open or finish a file: the complete records are recovered, also those
of a cut-off uncompressed or zstd chunk (an incomplete lz4 chunk yields nothing).
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from mbrl_control import MbrlError

_MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_DATA_END = 0x02, 0x03, 0x04, 0x05, 0x06, 0x0F


@dataclass
class McapScan:
    """What a sequential scan of an MCAP file recovered (in file order)."""

    schemas: dict = field(default_factory=dict)  # id -> (name, encoding, data)
    channels: dict = field(default_factory=dict)  # id -> (topic, schema id)
    messages: list = field(default_factory=list)  # (channel id, log time ns, data)
    reasons: list[str] = field(default_factory=list)  # per file: why the scan stopped early

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


def _scan_records(buf: bytes, pos: int, scan: McapScan, top: bool) -> str | None:
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


def _scan_record(op: int, body: bytes, scan: McapScan, top: bool) -> str | None:
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


def _partial_chunk(body: bytes, scan: McapScan) -> None:
    """Complete records of a chunk the file cut off (uncompressed or zstd)."""
    rec = _Reader(body)
    try:
        header = _chunk_header(rec)
        data = _decompress(bytes(body[rec.pos:rec.pos + header["size"]]), header["compression"], complete=False)
    except (ValueError, UnicodeDecodeError):
        return
    _scan_records(data, 0, scan, top=False)


def scan_mcap(files: list[Path], failure: Exception) -> McapScan:
    """Scan MCAP storage files record by record; ``reasons`` tells where each stopped early.

    ``failure`` (why the regular reader gave up) is quoted when a file is no MCAP at all.
    """
    scan = McapScan()
    for file in files:
        data = file.read_bytes()
        if not data.startswith(_MCAP_MAGIC):
            raise MbrlError(f"{file}: not an MCAP file ({failure})")
        reason = _scan_records(data, len(_MCAP_MAGIC), scan, top=True)
        if reason:
            scan.reasons.append(f"{file.name}: {reason}")
    return scan
