"""Where records are kept: the protocol every store follows.

The writer hands a store batches of :class:`~quart_app.records.LoginRecord` and
knows nothing else about it, so keeping records somewhere new means a new store,
not a new writer, route, signal or receiver.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..records import LoginRecord


class RecordStore(Protocol):
    """Something that keeps batches of login records, in order, each record once.

    ``kind`` (``"file"``) may be shown to anyone; ``description`` names the
    place (a path, a host) and is only for the operator's log.
    """

    kind: str
    description: str

    async def open(self) -> None:
        """Get ready to store; raise ``OSError`` (naming the place) if that is impossible."""

    def prepare(self, records: list[LoginRecord]) -> Any:
        """A batch of ``records`` for :meth:`write`: cheap, runs on the event loop."""

    async def write(self, batch: Any) -> Sequence[LoginRecord]:
        """Store ``batch``; return the records it can never store (set aside), usually none.

        Raises on a failure worth retrying. Writing the same batch again after a
        failure never stores a record twice: a store resumes where it stopped or
        makes the resend harmless.
        """

    async def sync(self) -> None:
        """Make everything written so far durable; after a failure, start afresh."""

    async def close(self) -> None:
        """Release what :meth:`open` took."""
