"""The writing task: it takes everything queued as one group and hands it to the store.

Under load (without durable mode) a group starts at most every ``linger``
seconds; a group is written in batches of at most ``max_batch`` records, each
retried until the store takes it, then synced in durable mode. A failure is
logged once per streak and cause, the recovery once. At a stop the loop
drains for at most ``drain_timeout`` seconds; what is left goes to
:meth:`~.hooks.Hooks.abandon`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence

from ..records import LoginRecord
from .errors import describe_error, one_line, refuse
from .hooks import Hooks


class WritingLoop(Hooks):
    """The one task that writes: groups, batches, retries, sync, drain."""

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
            refuse(done, "the login log could not confirm the record")
            return False
        self.metrics.sync_seconds.observe(time.perf_counter() - started)
        self._recovered()
        return True

    def _failed(self, exc: Exception, consequence: str) -> None:
        self.write_errors += 1
        self.metrics.write_errors.inc()
        self.last_error = describe_error(exc)
        self.last_error_at = self.clock()
        self.failing = True
        self._track_lag()
        # Once per streak and cause, not once per retry: a streak that starts
        # with a lost connection may go on for another reason.
        cause = one_line(f"{type(exc).__name__}: {exc}")
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

    async def _drain(self, task: asyncio.Task[None]) -> None:
        # The writer is no longer running: ``task`` writes what was taken and
        # returns, within drain_timeout, or is cancelled. Then whatever was not
        # confirmed, a write still hanging in its thread included, is abandoned.
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

    def _abandon_leftovers(self, reason: str) -> None:
        leftovers = self._in_flight + self._queue
        self._in_flight, self._queue = [], []
        self._in_flight_since = self._queue_since = math.inf
        self._track_lag()
        for future in (self._in_flight_done, self._queue_done):
            refuse(future, "the login log stopped")
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
