"""What a reader of the trail yields: a record with its place, or what could not be read there."""

from __future__ import annotations

from typing import NamedTuple

from quart_app.records import LoginRecord


class Found(NamedTuple):
    """A login record and where it was read: ``file:line``, or the row's host."""

    record: LoginRecord
    source: str


class Bad(NamedTuple):
    """What could not be read, where (``file:line``, or a source) and why.

    ``whole_source``: nothing of the source could be read (a missing file, an
    unreachable database), rather than one record of it.
    """

    place: str
    reason: str
    whole_source: bool = False
