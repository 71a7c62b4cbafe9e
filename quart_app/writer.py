"""The writer: one task per app that batches queued records into a store.

Producers (the audit receiver) call :meth:`LogWriter.submit`, which never
touches the store; the writer task takes everything waiting, joins it into one
batch and appends it in one go, like ``logging.handlers.QueueListener`` but
async and batching. Durable submits wait for their batch's ``sync``, so many
concurrent logins share one write and one fsync (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from .store import RecordStore

# One write(2) per batch keeps lines from several workers apart; a cap keeps a
# backlog from turning into one huge allocation and write.
MAX_BATCH_BYTES = 1 << 20
# Without durable mode no login waits for the disk, so batches start at most
# this often: under load the logins of the interval share one batch. Each
# batch's round trip to the writing thread cost the event loop 0.5-3 ms on the
# benchmark machine (a 2-vCPU KVM guest), so batches must be few, not merely
# large once a backlog builds. While logins come one batch of one at a time
# they are written at once; a login waiting for room (the queue is full) ends
# the wait.
BATCH_LINGER = 0.02
RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 2.0


class LogUnavailable(Exception):
    """The record was not taken; the login must not be acknowledged."""


class LogFull(LogUnavailable):
    """Too many records are waiting and no room came up in time."""


class LogWriter:
    """Queue records for one store and write them from a single task.

    The queue is a plain list that the writer swaps for an empty one, taking
    everything waiting in one step. An ``asyncio.Queue`` plus a semaphore for
    the bound cost a put, a get, an acquire and a release per record, which the
    benchmark showed at more than half of the writer's time; the list costs an
    append. ``pending`` counts records from :meth:`submit` until their batch is
    stored, so a batch being written or retried still counts against the bound.
    """

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
        self._stopping = False
        self._records: list[bytes] = []
        # Durable mode only: one future per record, resolved once it is synced.
        self._durable_waiters: list[asyncio.Future[None]] = []
        self._work = asyncio.Event()  # set when records are waiting
        self._room = asyncio.Event()  # set when a batch is stored
        self._hurry = asyncio.Event()  # set when lingering would keep a login waiting
        self._task: asyncio.Task[None] | None = None
        self._give_up_at: float | None = None

    async def start(self) -> None:
        """Open the store (raising if it cannot be opened) and start writing."""
        await self.store.open()
        # Fresh events: an event is bound to the loop that first waits on it.
        self._work, self._room, self._hurry = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="login-log-writer")
        self._accepting = True

    async def stop(self, give_up_after: float = 30.0) -> None:
        """Stop taking records, write every one already taken, close the store.

        While the store keeps failing, retries go on for ``give_up_after``
        seconds; records still unwritten then are logged in full at ERROR level,
        so that even then none vanishes without a trace.
        """
        if self._task is None:
            return
        self._accepting = False
        self._stopping = True
        self._give_up_at = asyncio.get_running_loop().time() + give_up_after
        self._work.set()
        self._hurry.set()
        self._room.set()  # logins waiting for room are refused now
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
        if not self._accepting:
            raise LogUnavailable("the login log is not running")
        if self.pending >= self.max_pending:
            await self._wait_for_room()
        self._records.append(data)
        self.pending += 1
        self._work.set()
        if self.durable:
            written = asyncio.get_running_loop().create_future()
            self._durable_waiters.append(written)
            try:
                async with asyncio.timeout(self.full_timeout):
                    # A timeout cancels the future, which tells the writer to
                    # drop the record unless its write is already under way.
                    await written
            except TimeoutError:
                raise LogUnavailable("the login log could not be written in time") from None

    async def _wait_for_room(self) -> None:
        # Every waiter wakes when a batch is stored and the first to run take
        # the room; the order among them is not guaranteed, but each one ends
        # with its record taken or a refusal, never a record lost.
        self._hurry.set()
        try:
            async with asyncio.timeout(self.full_timeout):
                while self._accepting and self.pending >= self.max_pending:
                    self._room.clear()
                    await self._room.wait()
        except TimeoutError:
            raise LogFull(
                f"the login log has {self.pending} records waiting to be written"
            ) from None
        if not self._accepting:
            raise LogUnavailable("the login log is shutting down")

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
        loop = asyncio.get_running_loop()
        last_batch, last_size = float("-inf"), 0
        while True:
            if not self._records:
                if self._stopping:
                    return
                self._work.clear()
                await self._work.wait()
                continue
            wait = last_batch + BATCH_LINGER - loop.time()
            # Logins one at a time (the last batch held one) are not load.
            busy = last_size > 1 and not (self._stopping or self.pending >= self.max_pending)
            if wait > 0 and busy and not self.durable:
                await self._linger(wait)
            last_batch = loop.time()
            records, waiters = self._take_batch()
            last_size = len(records)
            await self._write(records, waiters)

    async def _linger(self, seconds: float) -> None:
        # Cut short when a login starts waiting for room or the writer stops.
        self._hurry.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._hurry.wait()

    def _take_batch(self) -> tuple[list[bytes], list[asyncio.Future[None]]]:
        records, waiters = self._records, self._durable_waiters
        size = 0
        for count, data in enumerate(records, 1):
            size += len(data)
            if size >= MAX_BATCH_BYTES and count < len(records):
                self._records, self._durable_waiters = records[count:], waiters[count:]
                return records[:count], waiters[:count]
        self._records, self._durable_waiters = [], []
        return records, waiters

    async def _write(self, records: list[bytes], waiters: list[asyncio.Future[None]]) -> None:
        data = memoryview(b"")
        offset = 0
        delay = RETRY_FIRST_DELAY
        while True:
            if offset == 0:
                records, waiters = self._drop_refused(records, waiters)
                if not records:
                    return
                data = memoryview(b"".join(records))
            try:
                while offset < len(data):
                    offset += await self.store.append(data[offset:])
                if self.durable:
                    await self.store.sync()
                break
            except Exception as exc:
                self._record_error(exc, len(records))
                if self._give_up_at is not None and self._now() >= self._give_up_at:
                    self._give_up(len(records), bytes(data[offset:]))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
        if self.failing:
            self.failing = False
            self.logger.warning("login log: writing to %s works again", self.store.description)
        self.written += len(records)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._release(len(records))

    def _drop_refused(
        self, records: list[bytes], waiters: list[asyncio.Future[None]]
    ) -> tuple[list[bytes], list[asyncio.Future[None]]]:
        # Durable logins that already got their 503 are not written, as long
        # as no byte of their batch has gone out yet.
        live = [i for i, waiter in enumerate(waiters) if not waiter.cancelled()]
        if len(live) == len(waiters):
            return records, waiters
        self._release(len(records) - len(live))
        return [records[i] for i in live], [waiters[i] for i in live]

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

    def _give_up(self, count: int, unwritten: bytes) -> None:
        self.logger.error(
            "login log: giving up on %s at shutdown; unwritten records follow:\n%s",
            self.store.description,
            unwritten.decode(errors="replace"),
        )
        self._release(count)

    def _release(self, count: int) -> None:
        self.pending -= count
        self._room.set()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()
