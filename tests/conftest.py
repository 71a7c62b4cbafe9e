"""Shared fixtures: an app per test on a temporary log, and stores that stall or fail."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol

from quart_app import create_app
from quart_app.config import Settings
from quart_app.records import LoginRecord, parse_line
from quart_app.store import FileStore


class GatedStore(FileStore):
    """A file store whose appends block in the writer's thread until the gate opens.

    Like a stalled disk: the thread is stuck, the event loop is not.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.appends = 0

    async def append(self, data: memoryview) -> int:
        await asyncio.to_thread(self._wait)
        self.appends += 1
        return await super().append(data)

    def _wait(self) -> None:
        self.entered.set()
        self.gate.wait(timeout=30)


class FailingStore(FileStore):
    """A file store whose appends raise ``error`` while it is set."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.error: OSError | None = None
        self.failures = 0

    async def append(self, data: memoryview) -> int:
        if self.error is not None:
            self.failures += 1
            raise self.error
        return await super().append(data)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "login_log.txt"


@pytest.fixture
def make_app(log_path: Path) -> Callable[..., Quart]:
    """Build an app logging to the test's file; keyword args are config or the store."""

    def make(store: Callable[[Settings], Any] | None = None, **config: Any) -> Quart:
        config.setdefault("LOGIN_LOG_PATH", str(log_path))
        if store is None:
            return create_app(config)
        return create_app(config, store_factory=store)

    return make


@pytest.fixture
async def app(make_app: Callable[..., Quart]) -> Quart:
    return make_app()


@pytest.fixture
async def client(app: Quart) -> AsyncIterator[TestClientProtocol]:
    async with app.test_app() as test_app:
        yield test_app.test_client()


def read_records(path: Path) -> list[LoginRecord]:
    """Every line of the log, parsed; a malformed line fails the test."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), "the log ends in a torn line"
    # split("\n"), not splitlines(): a line must end only where the writer ended it.
    return [parse_line(line) for line in text.split("\n")[:-1]]


async def wait_for_records(path: Path, count: int, timeout: float = 10) -> list[LoginRecord]:
    """The log's records once it holds at least ``count`` of them."""
    async with asyncio.timeout(timeout):
        while len(records := read_records(path)) < count:
            await asyncio.sleep(0.01)
    return records
