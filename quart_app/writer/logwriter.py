"""LogWriter: the producers' side, the writing loop and the figures, started and stopped."""

from __future__ import annotations

import asyncio
import contextlib

from .health import Health
from .intake import Intake
from .loop import WritingLoop


class LogWriter(Intake, WritingLoop, Health):
    """Queue login records for one store and write them from a single task.

    The queue is a plain list the writer swaps for an empty one, taking
    everything waiting in one step: queueing a record costs an append. ``pending``
    counts records from :meth:`submit` until their batch is stored, so a batch
    being written or retried still counts against ``max_pending``.

    The parts are mixins sharing one instance, so that :meth:`offer`, on every
    login's path, reads its attributes directly: :mod:`.intake` (the producers),
    :mod:`.loop` (the writing task), :mod:`.health` (the figures) and
    :mod:`.hooks`. Subclasses may override :meth:`abandon` (records a stop
    could not confirm) and :meth:`set_aside` (records the store can never
    take); both log at ERROR by default.
    """

    async def start(self) -> None:
        """Open the store (raising if it cannot be opened) and start writing.

        Raises ``RuntimeError`` while already started: an app served twice at
        once would orphan the running writer and the records it holds.
        """
        if self._task is not None:
            raise RuntimeError(
                "the login log writer is already running: the app is already being served"
            )
        await self.store.open()
        # Fresh events: an event is bound to the loop that first waits on it.
        self._work, self._room, self._hurry = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._refused = asyncio.Event()
        self.state = "running"
        self._refusing = None
        self._task = asyncio.create_task(self._run(), name="login-log-writer")
        self._task.add_done_callback(self._ended)
        self._publisher = asyncio.create_task(self._publish_every(self.publish_interval))

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
        await self._drain(task)
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
