"""The writer: one task per app that batches queued records into a store.

Producers (the audit receiver) call :meth:`LogWriter.submit`, which never
touches the store; the writer task takes everything waiting, joins it into one
batch and appends it in one go, like ``logging.handlers.QueueListener`` but
async and batching. Durable submits wait for their batch's ``sync``, so many
concurrent logins share one write and one fsync (group commit).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .store import RecordStore

# One write(2) per batch keeps lines from several workers apart; a cap keeps a
# backlog from turning into one huge allocation and write.
MAX_BATCH_BYTES = 1 << 20
RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 2.0


class LogUnavailable(Exception):
    """The record was not taken; the login must not be acknowledged."""


class LogFull(LogUnavailable):
    """Too many records are waiting and no room came up in time."""


@dataclass(slots=True)
class _Entry:
    data: bytes
    written: asyncio.Future[None] | None


_STOP = object()


class LogWriter:
    """Queue records for one store and write them from a single task."""

    def __init__(
        self,
        store: RecordStore,
        *,
        max_pending: int,
        full_timeout: float,
        durable: bool,
        logger: logging.Logger,
    ) -> None:
        self.store = store
        self.max_pending = max_pending
        self.full_timeout = full_timeout
        self.durable = durable
        self.logger = logger
        self.pending = 0
        self.written = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.failing = False
        self._accepting = False
        self._queue: asyncio.Queue[Any] | None = None
        self._room: asyncio.Semaphore | None = None
        self._task: asyncio.Task[None] | None = None
        self._give_up_at: float | None = None

    async def start(self) -> None:
        """Open the store (raising if it cannot be opened) and start writing."""
        await self.store.open()
        self._queue = asyncio.Queue()
        self._room = asyncio.Semaphore(self.max_pending)
        self._task = asyncio.create_task(self._run(), name="login-log-writer")
        self._accepting = True

    async def stop(self, give_up_after: float = 30.0) -> None:
        """Stop taking records, write every one already taken, close the store.

        While the store keeps failing, retries go on for ``give_up_after``
        seconds; records still unwritten then are logged in full at ERROR level,
        so that even then none vanishes without a trace.
        """
        if self._task is None or self._queue is None:
            return
        self._accepting = False
        self._give_up_at = asyncio.get_running_loop().time() + give_up_after
        self._queue.put_nowait(_STOP)
        await self._task
        self._task = None
        await self.store.close()

    async def submit(self, data: bytes) -> None:
        """Queue one formatted record.

        Waits up to ``full_timeout`` for room when ``max_pending`` records are
        waiting, then raises :class:`LogFull`. In durable mode it returns only
        once the record is stored and synced, or raises :class:`LogUnavailable`
        after ``full_timeout``.
        """
        if not self._accepting or self._room is None or self._queue is None:
            raise LogUnavailable("the login log is not running")
        if self._room.locked():
            try:
                async with asyncio.timeout(self.full_timeout):
                    await self._room.acquire()
            except TimeoutError:
                raise LogFull(
                    f"the login log has {self.pending} records waiting to be written"
                ) from None
            if not self._accepting:  # stopped while we waited
                self._room.release()
                raise LogUnavailable("the login log is shutting down")
        else:
            await self._room.acquire()  # free room: returns at once
        self.pending += 1
        entry = _Entry(data, asyncio.get_running_loop().create_future() if self.durable else None)
        self._queue.put_nowait(entry)
        if entry.written is not None:
            try:
                async with asyncio.timeout(self.full_timeout):
                    # A timeout cancels the future, which tells the writer to
                    # drop the record unless its write is already under way.
                    await entry.written
            except TimeoutError:
                raise LogUnavailable("the login log could not be written in time") from None

    @property
    def running(self) -> bool:
        """Whether records are being taken."""
        return self._accepting

    def stats(self) -> dict[str, Any]:
        """The writer's figures, for the health endpoint."""
        return {
            "pending": self.pending,
            "written": self.written,
            "write_errors": self.write_errors,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "durable": self.durable,
            "store": self.store.description,
        }

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        stopping = False
        while not stopping:
            item = await queue.get()
            batch: list[_Entry] = []
            size = 0
            while True:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                size += len(item.data)
                if size >= MAX_BATCH_BYTES or queue.empty():
                    break
                item = queue.get_nowait()
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[_Entry]) -> None:
        data = memoryview(b"")
        offset = 0
        delay = RETRY_FIRST_DELAY
        while True:
            if offset == 0:
                # Durable logins that already got their 503 are not written.
                live = [e for e in batch if e.written is None or not e.written.cancelled()]
                self._release(len(batch) - len(live))
                batch = live
                if not batch:
                    return
                data = memoryview(b"".join(e.data for e in batch))
            try:
                while offset < len(data):
                    offset += await self.store.append(data[offset:])
                if self.durable:
                    await self.store.sync()
            except Exception as exc:
                self._record_error(exc, len(batch))
                if self._give_up_at is not None and self._now() >= self._give_up_at:
                    self._give_up(batch, bytes(data[offset:]))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
                continue
            break
        if self.failing:
            self.failing = False
            self.logger.warning("login log: writing to %s works again", self.store.description)
        self.written += len(batch)
        for entry in batch:
            if entry.written is not None and not entry.written.done():
                entry.written.set_result(None)
        self._release(len(batch))

    def _record_error(self, exc: Exception, waiting: int) -> None:
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_error_at = datetime.now(UTC)
        if not self.failing:  # once per streak, not once per retry
            self.failing = True
            self.logger.error(
                "login log: writing to %s failed (%s); %d records kept, retrying",
                self.store.description,
                self.last_error,
                waiting,
                exc_info=not isinstance(exc, OSError),
            )

    def _give_up(self, batch: list[_Entry], unwritten: bytes) -> None:
        self.logger.error(
            "login log: giving up on %s at shutdown; unwritten records follow:\n%s",
            self.store.description,
            unwritten.decode(errors="replace"),
        )
        self._release(len(batch))

    def _release(self, count: int) -> None:
        assert self._room is not None
        self.pending -= count
        for _ in range(count):
            self._room.release()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()
