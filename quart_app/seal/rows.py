"""A sealed table's leaves: the canonical bytes of a row, made alike by Python and by SQL.

Text would not do: PostgreSQL and Python print the same address and time
differently (``::ffff:c000:201``, ``2026-12-06 10:00:00+00``). A leaf is,
in order (big-endian integers):

* ``0x01``, the format;
* the id, 16 bytes;
* the time, 8 bytes: signed microseconds since 2000-01-01 00:00 UTC
  (PostgreSQL's own binary ``timestamptz``);
* the address: its family (1 byte: 0 none, 4 or 6), its prefix length (1
  byte) and its 16 bytes (an IPv4 address as ``::ffff:a.b.c.d``; zeros for none);
* the host and the username, each as its UTF-8 length (4 bytes) and bytes.

The stream and the position are not in it: they are where the leaf is, in
which tree and at which index.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from datetime import UTC, datetime, timedelta
from uuid import UUID

from ..records import LoginRecord

FORMAT = b"\x01"
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TIME = struct.Struct(">q")
_LENGTH = struct.Struct(">I")
_NO_ADDRESS = bytes(18)
_MAPPED = bytes(10) + b"\xff\xff"


def address_bytes(ip: str) -> bytes:
    """The address field of a leaf: family, prefix length, 16 bytes."""
    if ip == "-":
        return _NO_ADDRESS
    # inet_pton first: in C, a tenth of ipaddress's time, for the addresses a socket gives.
    try:
        return b"\x04\x20" + _MAPPED + socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        pass
    try:
        return b"\x06\x80" + socket.inet_pton(socket.AF_INET6, ip)
    except OSError:
        pass
    address = ipaddress.ip_address(ip)  # a scope (fe80::1%eth0): the table refuses it anyway
    if address.version == 4:
        return b"\x04\x20" + _MAPPED + address.packed
    return b"\x06\x80" + address.packed


def leaf(id_: UUID, record: LoginRecord, host: str) -> bytes:
    """The leaf of the row ``record`` is stored as, with ``id_`` and ``host``."""
    host_bytes = host.encode("utf-8", "surrogatepass")
    name = record.username.encode("utf-8", "surrogatepass")
    return b"".join(
        (
            FORMAT,
            id_.bytes,
            _TIME.pack((record.time - PG_EPOCH) // _MICROSECOND),
            address_bytes(record.ip),
            _LENGTH.pack(len(host_bytes)),
            host_bytes,
            _LENGTH.pack(len(name)),
            name,
        )
    )


LEAF_SQL = """\
'\\x01'::bytea || uuid_send(id) || timestamptz_send(logged_in_at)
|| CASE WHEN ip IS NULL THEN '\\x000000000000000000000000000000000000'::bytea
        WHEN family(ip) = 4 THEN '\\x04'::bytea || set_byte('\\x00'::bytea, 0, masklen(ip))
             || '\\x00000000000000000000ffff'::bytea || substring(inet_send(ip) FROM 5)
        ELSE '\\x06'::bytea || set_byte('\\x00'::bytea, 0, masklen(ip))
             || substring(inet_send(ip) FROM 5) END
|| int4send(octet_length(convert_to(host, 'UTF8'))) || convert_to(host, 'UTF8')
|| int4send(octet_length(convert_to(username, 'UTF8'))) || convert_to(username, 'UTF8')"""
"""The same bytes, from a row, in SQL: what ``verify`` reads (NULL if a column is)."""
