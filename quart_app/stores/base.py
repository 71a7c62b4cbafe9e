"""The protocol every store follows, and the base of a store that wraps another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..records import LoginRecord


class RecordStore(Protocol):
    """Something that keeps batches of login records, in order, each record once.

    ``kind`` (``"file"``) may be shown to anyone; ``description`` names the
    place (a path, a host) and is only for the operator's log. Both are only
    read, so a wrapper may answer with its inner store's.
    """

    @property
    def kind(self) -> str:
        """What keeps the records (``"file"``, ``"postgresql"``): may be shown to anyone."""

    @property
    def description(self) -> str:
        """The place (a path, a host): for the operator's log only."""

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


class WrappingStore:
    """A store that keeps its records in another, ``inner``, and adds to what it does.

    Every method of :class:`RecordStore`, and ``kind`` and ``description``, is
    the inner store's as it is: a subclass overrides only what it changes (a
    spool, :meth:`write` and :meth:`sync`, say) and calls the inner store for
    the rest. A batch is the inner store's, from its :meth:`prepare`, unless
    the subclass overrides :meth:`prepare` and :meth:`write` together.
    """

    def __init__(self, inner: RecordStore) -> None:
        self.inner = inner

    @property
    def kind(self) -> str:
        """The inner store's ``kind``."""
        return self.inner.kind

    @property
    def description(self) -> str:
        """The inner store's ``description``."""
        return self.inner.description

    async def open(self) -> None:
        """Open the inner store."""
        await self.inner.open()

    def prepare(self, records: list[LoginRecord]) -> Any:
        """The inner store's batch of ``records``."""
        return self.inner.prepare(records)

    async def write(self, batch: Any) -> Sequence[LoginRecord]:
        """Write ``batch`` to the inner store; return what it set aside."""
        return await self.inner.write(batch)

    async def sync(self) -> None:
        """Sync the inner store."""
        await self.inner.sync()

    async def close(self) -> None:
        """Close the inner store."""
        await self.inner.close()

    @property
    def spool(self) -> Any:
        """The spool among the stores inside, if any (its figures are the writer's to show)."""
        return getattr(self.inner, "spool", None)
