"""The writer: one task per app that hands batches of login records to a store.

Producers (the audit receiver) call :meth:`LogWriter.offer`, or
:meth:`LogWriter.submit` when they must wait, and never touch the store; the
writer task takes everything waiting as one group and
hands it to the store in batches, like ``logging.handlers.QueueListener`` but
async and batching. In durable mode the logins of a group share one future,
resolved once the group is written and synced (group commit). Without durable
mode a login is answered once queued only while the store keeps up; otherwise
it waits for its group to be written, as in durable mode without the sync, so
that a crash can lose no more than :attr:`LogWriter.lag_bound` seconds of
answered logins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from .metrics import Ledger, Metrics
from .records import LoginRecord, text_lines
from .stores import RecordStore

MAX_BATCH = 2048
"""The most records a store is handed at once, by default."""

LINGER = 0.05
"""Seconds: under load, without durable mode, batches start at most this often."""

LAG_BOUND = 2 * LINGER
"""Seconds: without durable mode, once the oldest record not yet written was taken longer
ago than this, logins wait for their own record to be written. Twice the linger, as the
oldest record of a batch waits one linger for its batch to start: no more than this much of
answered logins is ever only in memory."""

T = TypeVar("T")

_monotonic = time.monotonic  # a global, not an attribute lookup per login

LOG_LINES_PER_CALL = 1000
"""Records logged (abandoned or set aside) per call to the logger, one line each."""


class LogUnavailable(Exception):
    """The record was not confirmed; the login must not be acknowledged."""


class LogFull(LogUnavailable):
    """Too many records are waiting and no room came up in time."""


def describe_error(exc: BaseException) -> str:
    """An error's type and reason, safe to show anyone (``/healthz``).

    Without the file name an ``OSError`` may carry, and of a database error
    only its SQLSTATE: its message may name a role, a database or a value.
    """
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return f"{type(exc).__name__} (SQLSTATE {sqlstate})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _one_line(text: str) -> str:
    # A database's message may quote a row, and a username can hold a line
    # break: the operator's log gets one line per error, never a forged one.
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def _refuse(future: asyncio.Future[Any] | None, reason: str) -> None:
    """Fail the logins waiting on ``future`` (503), if it is still open."""
    if future is not None and not future.done():
        future.set_exception(LogUnavailable(reason))
        future.exception()  # retrieved here: every waiter may have given up already


class LogWriter:
    """Queue login records for one store and write them from a single task.

    The queue is a plain list the writer swaps for an empty one, taking
    everything waiting in one step: queueing a record costs an append. ``pending``
    counts records from :meth:`submit` until their batch is stored, so a batch
    being written or retried still counts against ``max_pending``.

    Subclasses may override :meth:`abandon` (records a stop could not confirm)
    and :meth:`set_aside` (records the store can never take); both log at
    ERROR by default.
    """

    retry_first_delay = 0.05
    retry_max_delay = 2.0
    lag_bound = LAG_BOUND

    def __init__(
        self,
        store: RecordStore,
        *,
        max_pending: int = 10_000,
        full_timeout: float = 5.0,
        durable: bool = False,
        drain_timeout: float = 15.0,
        linger: float = LINGER,
        max_batch: int = MAX_BATCH,
        logger: logging.Logger | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``linger``: under load, without durable mode, batches start at most this often.

        ``max_batch`` caps the records handed to the store at once.
        """
        self.store = store
        self.max_pending = max_pending
        self.full_timeout = full_timeout
        self.durable = durable
        self.drain_timeout = drain_timeout
        self.linger = linger
        self.max_batch = max_batch
        self.logger = logger or logging.getLogger(__name__)
        self.metrics = metrics or Metrics()
        self.metrics.ledger = self.ledger
        self.state = "stopped"  # then "running", "draining", "stopped"; or "failed"
        self.pending = 0
        self.taken = 0
        self.written = 0
        self.write_errors = 0
        self.set_aside_count = 0
        self.unconfirmed = 0
        self.failing = False
        self._logged_cause: str | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self._queue: list[LoginRecord] = []
        self._queue_done: asyncio.Future[Sequence[LoginRecord]] | None = None
        # Monotonic times the oldest record of the queue, and of the group being
        # written, were taken (inf: none): how far the store lags behind the logins.
        self._queue_since = math.inf
        self._in_flight_since = math.inf
        # Past this monotonic time (-inf while writes fail) a login waits for its record.
        self._lag_deadline = math.inf
        # Taken by the writer and not yet confirmed (written; durable: synced).
        self._in_flight: list[LoginRecord] = []
        self._in_flight_done: asyncio.Future[Sequence[LoginRecord]] | None = None
        # Set by refuse_waiting(): why a login that would wait is refused at once.
        self._refusing: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._work = asyncio.Event()  # set when records are waiting
        self._room = asyncio.Event()  # set when records were stored
        self._hurry = asyncio.Event()  # set when lingering would keep a login waiting
        self._refused = asyncio.Event()  # set by refuse_waiting()

    async def start(self) -> None:
        """Open the store (raising if it cannot be opened) and start writing."""
        await self.store.open()
        # Fresh events: an event is bound to the loop that first waits on it.
        self._work, self._room, self._hurry = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._refused = asyncio.Event()
        self.state = "running"
        self._refusing = None
        self._task = asyncio.create_task(self._run(), name="login-log-writer")
        self._task.add_done_callback(self._ended)
        self._publisher = asyncio.create_task(self._publish_every(1.0))

    async def stop(self) -> bool:
        """Stop taking records and write every one taken, for at most ``drain_timeout`` s.

        Returns True when all were written. Otherwise the records not confirmed
        written, those of a write still hanging included, go to :meth:`abandon`
        and False is returned: a thread stuck in the kernel cannot be stopped,
        so the caller decides whether to wait for it.
        """
        task = self._task
        if task is None:
            return self.unconfirmed == 0
        if self.state == "running":
            self.state = "draining"
        self._wake_all()
        try:
            async with asyncio.timeout(self.drain_timeout):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
        except asyncio.CancelledError:
            # Cancelled from outside (a server's own stop bound passed first):
            # say what is lost before going.
            task.cancel()
            self._abandon_leftovers("the stop was cancelled")
            raise
        except Exception:
            self.logger.exception("login log: the writer failed while stopping")
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        self._abandon_leftovers(f"not written within the drain timeout of {self.drain_timeout} s")
        self._task = None
        if self._publisher is not None:
            self._publisher.cancel()
            self._publisher = None
        await self._publish()
        if self.state == "draining":
            self.state = "stopped"
        # The store's thread may be stuck in a write: do not wait on it for long.
        with contextlib.suppress(TimeoutError, Exception):
            async with asyncio.timeout(1):
                await self.store.close()
        return self.unconfirmed == 0

    def refuse_waiting(self, reason: str) -> None:
        """Refuse the logins waiting for their record or for room, and those that would wait.

        They raise :class:`LogUnavailable` with ``reason`` (503). Their records
        stay queued: the drain may still write them, as after any 503. A served
        process calls this just before its server cancels the requests still
        running, so that they are answered while they can be.
        """
        self._refusing = reason
        self._refused.set()
        for future in (self._in_flight_done, self._queue_done):
            _refuse(future, reason)
        self._queue_done = None
        self._room.set()

    async def unless_refused(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` (a login's body, say) unless :meth:`refuse_waiting` comes first.

        Then ``awaitable`` is cancelled and :class:`LogUnavailable` raised, so
        that a login still waiting for its body at a stop is answered 503 as
        well, before its server cancels it.
        """
        if self._refusing is not None:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never to run: no "never awaited" warning
            raise LogUnavailable(self._refusing)
        work = asyncio.ensure_future(awaitable)
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait((work, refused), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled itself: the work goes too
            work.cancel()
            raise
        finally:
            refused.cancel()
        if work.done():
            return work.result()
        work.cancel()
        raise LogUnavailable(self._refusing or "the login log is stopping")

    def offer(self, record: LoginRecord) -> bool:
        """Queue ``record`` if that needs no waiting; return whether it was queued.

        True means the login may be answered at once: without durable mode,
        with room in the queue, while the store keeps up (no write failing,
        no record waiting longer than :attr:`lag_bound`). Otherwise nothing is
        done and the caller awaits :meth:`submit`. A synchronous fast path:
        the login route calls this for every login.
        """
        if self.durable or self.pending >= self.max_pending or self.state != "running":
            return False
        now = _monotonic()
        if now > self._lag_deadline:
            return False
        if not self._queue:
            self._queue_since = now
            self._track_lag()
        self._queue.append(record)
        self.pending += 1
        self.taken += 1
        self._work.set()
        return True

    async def submit(self, record: LoginRecord) -> None:
        """Queue one record.

        Waits up to ``full_timeout`` for room when ``max_pending`` records are
        waiting, then raises :class:`LogFull`. It returns only once the record
        is written (in durable mode: and synced) when durable, or when the
        store does not keep up (a write failing, a record waiting longer than
        :attr:`lag_bound`), and raises :class:`LogUnavailable` when that is not
        confirmed within ``full_timeout`` or the sync fails.
        """
        if self.state != "running":
            raise LogUnavailable(f"the login log is {self.state}")
        if self.pending >= self.max_pending:
            await self._wait_for_room()
        now = _monotonic()
        keeps_up = now <= self._lag_deadline
        if not self._queue:
            self._queue_since = now
            self._track_lag()
        self._queue.append(record)
        self.pending += 1
        self.taken += 1
        self._work.set()
        if self.durable:
            await self._confirmed(record)
        elif not keeps_up:
            self._hurry.set()  # no lingering: a login waits for this group
            await self._confirmed(record)

    def _track_lag(self) -> None:
        # A deadline, recomputed when the oldest record or the failing state
        # changes, so that the login path compares one number with the clock.
        oldest = min(self._in_flight_since, self._queue_since)
        self._lag_deadline = -math.inf if self.failing else oldest + self.lag_bound

    async def _confirmed(self, record: LoginRecord) -> None:
        if self._refusing is not None:
            raise LogUnavailable(self._refusing)
        done = self._queue_done
        if done is None:
            done = self._queue_done = self._group_future()
        # Shielded: one login giving up must not cancel its group's future.
        set_aside = await asyncio.shield(done)
        if any(item is record for item in set_aside):
            raise LogUnavailable("the login log set the record aside")

    def _group_future(self) -> asyncio.Future[Sequence[LoginRecord]]:
        # One timer per group, not one per login (asyncio.timeout cost a
        # durable login about 2% of its CPU): the group's logins are refused
        # together once it is not confirmed within full_timeout of its first.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Sequence[LoginRecord]] = loop.create_future()
        timer = loop.call_later(self.full_timeout, self._expire, done)
        done.add_done_callback(lambda _: timer.cancel())
        return done

    def _expire(self, done: asyncio.Future[Sequence[LoginRecord]]) -> None:
        if done.done():
            return
        if done is self._queue_done:
            self._queue_done = None  # logins from now on start a group of their own
        _refuse(done, "the login log could not confirm the record in time")

    async def _wait_for_room(self) -> None:
        # Every waiter wakes when records are stored and the first to run take
        # the room; each one ends with its record taken or a refusal.
        self._hurry.set()
        try:
            async with asyncio.timeout(self.full_timeout):
                while self._waits_for_room():
                    self._room.clear()
                    await self._room.wait()
        except TimeoutError:
            raise LogFull(
                f"the login log has {self.pending} records waiting to be written"
            ) from None
        if self.state != "running":
            raise LogUnavailable(f"the login log is {self.state}")
        if self._refusing is not None:
            raise LogUnavailable(self._refusing)

    def _waits_for_room(self) -> bool:
        running = self.state == "running" and self._refusing is None
        return running and self.pending >= self.max_pending

    @property
    def alive(self) -> bool:
        """Whether the writer task is there to write (running or draining)."""
        return self._task is not None and not self._task.done()

    def oldest_age(self) -> float:
        """Seconds since the oldest record not yet written was taken (0 if none)."""
        oldest = self._in_flight or self._queue
        if not oldest:
            return 0.0
        return max(0.0, (datetime.now(UTC) - oldest[0].time).total_seconds())

    def ledger(self) -> Ledger:
        """The figures the metrics report, all of one moment."""
        return Ledger(
            self.taken,
            self.written,
            self.pending,
            self.set_aside_count,
            self.unconfirmed,
            self.oldest_age(),
        )

    async def _publish_every(self, interval: float) -> None:
        # A task of its own: the figures must move while a write hangs.
        while True:
            await self._publish()
            await asyncio.sleep(interval)

    async def _publish(self) -> None:
        try:
            await asyncio.to_thread(self.metrics.publish)
        except OSError as exc:  # the metrics directory went away: scrapes miss this worker
            self.logger.warning("login log: cannot publish the metrics: %s", exc)

    def stats(self) -> dict[str, Any]:
        """The writer's figures (no path or address: they are shown to anyone)."""
        return {
            "state": self.state,
            "pending": self.pending,
            "max_pending": self.max_pending,
            "oldest_pending_age_s": round(self.oldest_age(), 3),
            "written": self.written,
            "write_errors": self.write_errors,
            "set_aside": self.set_aside_count,
            "unconfirmed": self.unconfirmed,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "durable": self.durable,
            "store": self.store.kind,
        }

    def abandon(self, records: Sequence[LoginRecord], reason: str) -> None:
        """Records that could not be confirmed written: each logged as one ERROR line.

        Override to send them elsewhere. The lines are in the text format,
        escaped, so one record is one line.
        """
        self._log_each(f"login log: NOT CONFIRMED WRITTEN ({reason}): ", records)

    def set_aside(self, records: Sequence[LoginRecord]) -> None:
        """Records the store set aside: each logged as one ERROR line.

        The store refused them for good, or cannot tell whether it took them;
        it logged why just before. Override to send them elsewhere.
        """
        self._log_each("login log: record set aside by the store (why: logged above): ", records)

    def _log_each(self, prefix: str, records: Sequence[LoginRecord]) -> None:
        # Each record is a line of its own that starts with ``prefix``, but one
        # log call carries up to LOG_LINES_PER_CALL of them: a call per record
        # took 17 µs, so a stop logging 100,000 records outlived its margin.
        for start in range(0, len(records), LOG_LINES_PER_CALL):
            lines = text_lines(records[start : start + LOG_LINES_PER_CALL]).decode()
            self.logger.error("%s", "\n".join(prefix + line for line in lines.split("\n")[:-1]))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_start, last_size = float("-inf"), 0
        while True:
            if not self._queue:
                if self.state != "running":
                    return
                self._work.clear()
                await self._work.wait()
                continue
            wait = last_start + self.linger - loop.time()
            # Logins one at a time (the last group held one) are not load.
            busy = last_size > 1 and self.state == "running"
            if wait > 0 and busy and not self.durable:
                await self._linger(wait)
            if self.state == "running":
                self._hurry.clear()
            last_start = loop.time()
            records, done = self._queue, self._queue_done
            self._queue, self._queue_done = [], None
            self._in_flight_since, self._queue_since = self._queue_since, math.inf
            self._track_lag()
            last_size = len(records)
            await self._write_group(records, done)
            self._in_flight_since = math.inf
            self._track_lag()

    async def _linger(self, seconds: float) -> None:
        # Cut short when a login starts waiting for room or the writer stops.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._hurry.wait()

    async def _write_group(
        self, records: list[LoginRecord], done: asyncio.Future[Sequence[LoginRecord]] | None
    ) -> None:
        self._in_flight, self._in_flight_done = records, done
        set_aside: list[LoginRecord] = []
        for start in range(0, len(records), self.max_batch):
            batch = records[start : start + self.max_batch]
            refused = await self._write_batch(batch)
            set_aside += refused
            if not self.durable:  # durable records are confirmed by the sync
                self._in_flight = records[start + len(batch) :]
            elif refused:  # accounted for already: never given up again
                gone = {id(r) for r in refused}
                self._in_flight = [r for r in self._in_flight if id(r) not in gone]
            self._release(len(batch))
        if self.durable and not await self._sync(len(records), done):
            return
        self._in_flight = []
        self.written += len(records) - len(set_aside)
        if done is not None and not done.done():
            done.set_result(set_aside)

    async def _write_batch(self, records: list[LoginRecord]) -> Sequence[LoginRecord]:
        batch = self.store.prepare(records)
        delay = self.retry_first_delay
        while True:
            started = time.perf_counter()
            try:
                set_aside = await self.store.write(batch)
            except Exception as exc:
                self._failed(exc, f"{len(records)} records kept, retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_delay)
                continue
            self.metrics.write_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_records.observe(len(records))
            self._recovered()
            if set_aside:
                self.set_aside_count += len(set_aside)
                self.set_aside(set_aside)
            return set_aside

    async def _sync(self, count: int, done: asyncio.Future[Sequence[LoginRecord]] | None) -> bool:
        started = time.perf_counter()
        try:
            await self.store.sync()
        except Exception as exc:
            # Not retried: after a failed sync, whether the data reached the
            # disk is unknown, and a later sync can succeed without it.
            self._failed(exc, f"{count} logins refused (503); their lines may be in the log")
            self._in_flight = []
            _refuse(done, "the login log could not confirm the record")
            return False
        self.metrics.sync_seconds.observe(time.perf_counter() - started)
        self._recovered()
        return True

    def _failed(self, exc: Exception, consequence: str) -> None:
        self.write_errors += 1
        self.metrics.write_errors.inc()
        self.last_error = describe_error(exc)
        self.last_error_at = datetime.now(UTC)
        self.failing = True
        self._track_lag()
        # Once per streak and cause, not once per retry: a streak that starts
        # with a lost connection may go on for another reason.
        cause = _one_line(f"{type(exc).__name__}: {exc}")
        if cause != self._logged_cause:
            self._logged_cause = cause
            self.logger.error(
                "login log: writing to %s failed (%s); %s",
                self.store.description,
                cause,
                consequence,
                exc_info=not isinstance(exc, OSError),
            )

    def _recovered(self) -> None:
        if self.failing:
            self.failing = False
            self._track_lag()
            self._logged_cause = None
            self.logger.warning("login log: writing to %s works again", self.store.description)

    def _release(self, count: int) -> None:
        self.pending -= count
        self._room.set()

    def _wake_all(self) -> None:
        self._work.set()
        self._hurry.set()
        self._room.set()  # logins waiting for room are refused now

    def _abandon_leftovers(self, reason: str) -> None:
        leftovers = self._in_flight + self._queue
        self._in_flight, self._queue = [], []
        self._in_flight_since = self._queue_since = math.inf
        self._track_lag()
        for future in (self._in_flight_done, self._queue_done):
            _refuse(future, "the login log stopped")
        self._in_flight_done = self._queue_done = None
        if leftovers:
            self.pending = 0
            self.unconfirmed += len(leftovers)
            self.abandon(leftovers, reason)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self.state not in ("running", "draining"):
            return
        error = None if task.cancelled() else task.exception()
        if self.state == "draining" and error is None:
            return
        self.state = "failed"
        self.logger.error(
            "login log: the writer task ended unexpectedly; logins are refused (503) from now",
            exc_info=error,
        )
        self._wake_all()
        self._abandon_leftovers("the writer task ended")
