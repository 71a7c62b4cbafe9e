"""The spool's record format: one frame per record, with a length and a checksum.

A frame is ``MAGIC`` (4 bytes), the payload's length and the CRC-32 of the
length and the payload (big-endian, 4 bytes each), then the payload. A
record's payload is its kind (``R``: never sent; ``M``: may be in the table
already), its id (16 bytes), its time in microseconds since 1970 UTC (8
bytes, signed), the lengths of its IP and host (1 and 2 bytes), then the IP
(ASCII; empty for ``-``), the host and the username (UTF-8). A sealed
table's record (kinds ``S`` and ``T`` for ``R`` and ``M``) also carries its
stream's length (2 bytes, after the host's) and its position (8 bytes), and
the stream (UTF-8, after the host): as first stamped, never changed. A file
starts with a header frame (``H`` and JSON naming its database, table and host).

Hand-written, not pickle or JSON: a frame is read back exactly or found
damaged, and the checksum tells a record cut short by a crash (at the end of
a file, nothing valid after it) from one damaged later (valid frames follow).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from ..records import LoginRecord

MAGIC = b"\xa5QAS"
_FRAME = struct.Struct(">4sII")  # magic, length, CRC-32 of the length and the payload
_LENGTH = struct.Struct(">I")
_RECORD = struct.Struct(">c16sqBH")  # kind, id, microseconds, IP length, host length
_SEALED = struct.Struct(">c16sqBHHq")  # and stream length, position
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
HEADER_KIND = b"H"
NEW = b"R"
MAYBE_STORED = b"M"
SEALED_NEW = b"S"
SEALED_MAYBE_STORED = b"T"
MAX_PAYLOAD = 1 << 16
"""No record's payload is longer: a longer length is damage, not a record."""


def frame(payload: bytes) -> bytes:
    """``payload`` framed: magic, length, checksum, payload."""
    length = _LENGTH.pack(len(payload))
    return MAGIC + length + _LENGTH.pack(zlib.crc32(payload, zlib.crc32(length))) + payload


def header_frame(binding: dict[str, str]) -> bytes:
    """The first frame of a spool file: what it was spooled for."""
    text = json.dumps({"format": 1, **binding}, sort_keys=True, ensure_ascii=False)
    return frame(HEADER_KIND + text.encode("utf-8", "surrogatepass"))


def spooled_for(header: dict[str, Any] | None) -> dict[str, Any] | None:
    """The binding (database, table, host) a file's header names; None if it has none."""
    if header is None:
        return None
    return {key: value for key, value in header.items() if key != "format"}


def first_header(data: bytes) -> dict[str, Any] | None:
    """The header a spool file's bytes start with, or None if its first frame is not one."""
    payload = _payload_at(data, 0)
    if payload is None or payload[:1] != HEADER_KIND:
        return None
    try:
        found = json.loads(payload[1:])
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def record_frames(
    records: list[LoginRecord],
    ids: list[UUID],
    host: str,
    maybe_stored: list[bool],
    stream: str | None = None,
    positions: list[int | None] | None = None,
) -> list[bytes]:
    """One frame per record, with its id, host and whether it may be stored already; and a
    sealed table's stream and position."""
    host_bytes = host.encode("utf-8", "surrogatepass")
    stream_bytes = (stream or "").encode("utf-8", "surrogatepass")
    places = positions if stream is not None and positions is not None else None
    frames = []
    for number, (record, id_, maybe) in enumerate(zip(records, ids, maybe_stored, strict=True)):
        ip = b"" if record.ip == "-" else record.ip.encode("ascii")
        micros = (record.time - _EPOCH) // _MICROSECOND
        name = record.username.encode("utf-8", "surrogatepass")
        position = None if places is None else places[number]
        if position is None:
            head = _RECORD.pack(
                MAYBE_STORED if maybe else NEW, id_.bytes, micros, len(ip), len(host_bytes)
            )
            frames.append(frame(b"".join((head, ip, host_bytes, name))))
            continue
        head = _SEALED.pack(
            SEALED_MAYBE_STORED if maybe else SEALED_NEW,
            id_.bytes,
            micros,
            len(ip),
            len(host_bytes),
            len(stream_bytes),
            position,
        )
        frames.append(frame(b"".join((head, ip, host_bytes, stream_bytes, name))))
    return frames


def longest_frame(host: str, username_max_length: int, *, sealed: bool = False) -> int:
    """The bytes of the longest record frame a host can write (``sealed``: into a sealed
    table, its stream at most 1,000 bytes): no record is longer."""
    host_bytes = len(host.encode("utf-8", "surrogatepass"))
    ip_bytes = 255  # its length is one byte
    if sealed:
        return _FRAME.size + _SEALED.size + ip_bytes + host_bytes + 1000 + 4 * username_max_length
    return _FRAME.size + _RECORD.size + ip_bytes + host_bytes + 4 * username_max_length


@dataclass(slots=True)
class Spooled:
    """One record read back: the record, its id and host, and whether it may be stored."""

    record: LoginRecord
    id: UUID
    host: str
    maybe_stored: bool
    stream: str | None = None
    position: int | None = None


@dataclass(slots=True)
class Scan:
    """What a spool file holds: its header, its records, and what could not be read.

    ``torn``: the bytes after the last valid frame, which no valid frame
    follows, if they are no longer than one frame: a write a crash cut short.
    ``damaged``: ``(offset, bytes)`` of every other unreadable piece: one that
    valid frames follow, a longer tail, a file with no valid frame.
    """

    header: dict[str, Any] | None = None
    records: list[Spooled] = field(default_factory=list)
    damaged: list[tuple[int, bytes]] = field(default_factory=list)
    torn: int = 0


def _payload_at(data: bytes, pos: int) -> bytes | None:
    if data[pos : pos + 4] != MAGIC or pos + _FRAME.size > len(data):
        return None
    _, length, checksum = _FRAME.unpack_from(data, pos)
    end = pos + _FRAME.size + length
    if length > MAX_PAYLOAD or end > len(data):
        return None
    payload = data[pos + _FRAME.size : end]
    if zlib.crc32(payload, zlib.crc32(data[pos + 4 : pos + 8])) != checksum:
        return None
    return payload


def _record(payload: bytes) -> Spooled:
    kind = payload[:1]
    stream: str | None = None
    position: int | None = None
    if kind in (SEALED_NEW, SEALED_MAYBE_STORED):
        _, id_, micros, ip_length, host_length, stream_length, position = _SEALED.unpack_from(
            payload
        )
        start = _SEALED.size
    elif kind in (NEW, MAYBE_STORED):
        _, id_, micros, ip_length, host_length = _RECORD.unpack_from(payload)
        start, stream_length = _RECORD.size, 0
    else:
        raise ValueError(f"no record kind {kind!r}")
    ip = payload[start : start + ip_length].decode("ascii") or "-"
    start += ip_length
    host = payload[start : start + host_length].decode("utf-8", "surrogatepass")
    start += host_length
    if stream_length or position is not None:
        stream = payload[start : start + stream_length].decode("utf-8", "surrogatepass")
        start += stream_length
        if not stream or position is None or position < 0:
            raise ValueError("a sealed record without its stream or position")
    name = payload[start:].decode("utf-8", "surrogatepass")
    time = _EPOCH + timedelta(microseconds=micros)
    maybe = kind in (MAYBE_STORED, SEALED_MAYBE_STORED)
    return Spooled(LoginRecord(name, time, ip), UUID(bytes=id_), host, maybe, stream, position)


_BAD_CONTENT = (ValueError, struct.error, OverflowError, RecursionError)
"""What decoding a frame whose checksum holds may raise: damage, or a forged frame."""


def _decoded(payload: bytes, host: str | None) -> Spooled | dict[str, Any] | None:
    try:
        item = json.loads(payload[1:]) if payload[:1] == HEADER_KIND else _record(payload)
    except _BAD_CONTENT:
        return None
    if isinstance(item, Spooled):
        return item if host is None or item.host == host else None
    return item if isinstance(item, dict) else None


def scan(data: bytes, host: str | None = None) -> Scan:
    """Read a spool file's bytes: every valid frame, and where the others are.

    A frame whose checksum holds but whose content does not (a kind, a time or
    an address no record has; with ``host``, a record of another host) is
    damage on its own, never a torn tail: no crash writes it.
    """
    result = Scan()
    pos, bad = 0, -1  # bad: where the unreadable piece being crossed began
    pos_valid = False  # whether a valid frame was read
    while pos < len(data):
        payload = _payload_at(data, pos)
        if payload is None:
            if bad < 0:
                bad = pos
            following = data.find(MAGIC, pos + 1)
            if following < 0:
                break
            pos = following
            continue
        if bad >= 0:
            result.damaged.append((bad, data[bad:pos]))
            bad = -1
        pos_valid = True
        end = pos + _FRAME.size + len(payload)
        item = _decoded(payload, host)
        if item is None:
            result.damaged.append((pos, data[pos:end]))
        elif isinstance(item, Spooled):
            result.records.append(item)
        elif result.header is None:
            result.header = item
        pos = end
    if bad >= 0:
        if pos_valid and len(data) - bad <= _FRAME.size + MAX_PAYLOAD:
            result.torn = len(data) - bad
        else:  # more than one write cut short, or no spool file at all: kept, not dropped
            result.damaged.append((bad, data[bad:]))
    return result


def summary(data: bytes) -> tuple[int, datetime | None]:
    """How many records a spool file holds, and the first one's time: cheaply, by lengths.

    Frames are counted by their lengths alone, and only the first record is
    decoded (a damaged payload is counted, and found when forwarded); a file
    whose frames do not follow one another so is read with :func:`scan`.
    """
    pos, count, first = 0, 0, None
    while pos + _FRAME.size <= len(data):
        magic, length, _ = _FRAME.unpack_from(data, pos)
        if magic != MAGIC or length > MAX_PAYLOAD:
            break
        if data[pos + _FRAME.size : pos + _FRAME.size + 1] != HEADER_KIND:
            count += 1
            if first is None:
                payload = _payload_at(data, pos)
                item = None if payload is None else _decoded(payload, None)
                if not isinstance(item, Spooled):
                    break
                first = item.record.time
        pos += _FRAME.size + length
    if pos == len(data):
        return count, first
    found = scan(data)
    return len(found.records), found.records[0].record.time if found.records else None
