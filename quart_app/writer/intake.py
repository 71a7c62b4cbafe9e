"""The producers' side: queueing a login's record, and waiting for it or for room.

:meth:`Intake.offer` is the login path's fast path; :meth:`Intake.submit`
waits when a login must (durable mode, a full queue, a store that does not
keep up), the logins of one group sharing one future (group commit).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from ..records import LoginRecord
from .base import WriterBase
from .errors import LogFull, LogUnavailable, refuse

T = TypeVar("T")

_monotonic = time.monotonic  # a global, not an attribute lookup per login


class Intake(WriterBase):
    """Queue records for the writing loop; wait for their confirmation or for room."""

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
            refuse(future, reason)
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
        # One timer per group, not one per login (a timer is a cost on every
        # durable login's path): the group's logins are refused together once
        # it is not confirmed within full_timeout of its first.
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
        refuse(done, "the login log could not confirm the record in time")

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
