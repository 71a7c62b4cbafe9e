"""Shared fixtures: an app per test on a temporary log, with a store a test can stall or fail."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol

from quart_app import create_app
from quart_app.config import Settings
from quart_app.records import LoginRecord, parse_line
from quart_app.state import KEY
from quart_app.stores import RecordStore, WrappingStore, store_from_settings
from quart_app.tools.throwaway_postgres import Postgres, throwaway_postgres
from quart_app.writer import LogWriter

# Before the first import of a helper: their asserts explain themselves as a test's do.
pytest.register_assert_rewrite("helpers")

from helpers.pg import DATABASES, EXTERNAL_URL, Database  # noqa: E402


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


@pytest.fixture(autouse=True)
def no_quart_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process apps see only the settings their test gives, not the shell's ``QUART_*``."""
    for name in list(os.environ):
        if name.startswith("QUART_"):
            monkeypatch.delenv(name)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "login_log.txt"


@pytest.fixture
def make_app(log_path: Path) -> Callable[..., Quart]:
    """Build an app logging to the test's file; keyword args are config keys.

    ``store=ControlledStore`` wraps the app's store in one the test can
    control (see :func:`store_of`).
    """

    def make(store: Callable[[RecordStore], RecordStore] | None = None, **config: Any) -> Quart:
        config.setdefault("LOGIN_LOG_PATH", str(log_path))
        if store is None:
            return create_app(config)

        def factory(settings: Settings) -> RecordStore:
            return store(store_from_settings(settings))

        return create_app(config, store_factory=factory)

    return make


def writer_of(app: Quart) -> LogWriter:
    """The app's writer."""
    return app.extensions[KEY].writer


def store_of(app: Quart) -> Any:
    """The app's store."""
    return writer_of(app).store


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
    """The log's records once it holds at least ``count`` of them.

    A batch being written may be read half-way (a reader is not atomic with
    ``write(2)``): until then only whole lines count, and the last read must be whole.
    """
    async with asyncio.timeout(timeout):
        while _whole_lines(path) < count:
            await asyncio.sleep(0.01)
    return read_records(path)


def _whole_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def flock_pids(path: Path) -> tuple[set[int], set[int]]:
    """The pids holding, and those waiting for, a ``flock`` on ``path`` (from ``/proc/locks``)."""
    st = os.stat(path)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders: set[int] = set()
    waiters: set[int] = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        waiting = fields[1] == "->"
        kind, pid, file = fields[1 + waiting], fields[4 + waiting], fields[5 + waiting]
        if kind == "FLOCK" and file == key:
            (waiters if waiting else holders).add(int(pid))
    return holders, waiters


async def until(condition: Callable[[], object], what: str, timeout: float = 10) -> None:
    """Wait until ``condition()`` is true; fail the test, naming ``what``, after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.01)


@contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        # Lazily: a killed server's file may still be open for a moment.
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a tmpfs of the given size (``"64k"``) in the test's directory: a disk that fills.

    Needs root (the tests run as root on CI); skips with the reason where mount is refused.
    """
    with ExitStack() as stack:

        def mount(size: str = "64k") -> Path:
            if shutil.which("mount") is None:
                pytest.skip("no mount command here")
            return stack.enter_context(
                _tmpfs(tmp_path / f"disk-{size}-{secrets.token_hex(2)}", size)
            )

        yield mount


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """The session's throwaway PostgreSQL, started by the first test that needs it."""
    with throwaway_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


async def _database(url: str, server: Postgres | None) -> AsyncIterator[Database]:
    database = Database(url, f"t_{secrets.token_hex(4)}", server)
    try:
        yield database
    finally:
        if server is not None and server.pid is None:
            server.start()  # a test stopped it and failed before starting it again
        await database.drop()


@pytest.fixture(params=DATABASES)
async def database(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """A table name of the test's own on a real PostgreSQL: the throwaway one, then
    ``TEST_DATABASE_URL``'s when it is set."""
    if request.param == "external":
        server, url = None, EXTERNAL_URL
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.url
    async for database in _database(url, server):
        yield database


@pytest.fixture
async def throwaway_database(postgres_server: Postgres) -> AsyncIterator[Database]:
    """A table name of the test's own on the throwaway server, which the test may stop."""
    async for database in _database(postgres_server.url, postgres_server):
        yield database
