"""A store a test can stall, slow or make fail; and an app's writer and store, for a test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from quart import Quart

from quart_app.records import LoginRecord
from quart_app.state import KEY
from quart_app.stores import RecordStore, WrappingStore
from quart_app.writer import LogWriter


class ControlledStore(WrappingStore):
    """A store (a file store, in tests) that a test can stall, slow down or make fail.

    ``gate``: while clear, writes block in a thread of the writer's, like a
    stalled disk (the thread is stuck, the event loop is not); ``delay``:
    seconds each write takes there; ``error``: raised by every write while
    set. ``entered`` is set once a write reached the thread; ``writes``
    counts the writes that went past the gate, ``failures`` those that raised.
    """

    def __init__(self, inner: RecordStore) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.delay = 0.0
        self.error: OSError | None = None
        self.failures = 0
        self.writes = 0

    async def write(self, batch: Any) -> Sequence[LoginRecord]:
        if self.error is not None:
            self.failures += 1
            raise self.error
        await asyncio.to_thread(self._pass_the_gate)
        return await super().write(batch)

    def _pass_the_gate(self) -> None:
        self.entered.set()
        self.gate.wait(timeout=30)
        if self.delay:
            threading.Event().wait(self.delay)
        self.writes += 1


def writer_of(app: Quart) -> LogWriter:
    """The app's writer."""
    return app.extensions[KEY].writer


def store_of(app: Quart) -> Any:
    """The app's store (a :class:`ControlledStore` when the app was made with one)."""
    return writer_of(app).store
