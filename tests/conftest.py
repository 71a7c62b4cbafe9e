"""Shared fixtures: an app per test on a temporary log, a small disk, a real PostgreSQL.

Fixtures only: what tests share besides is in the ``helpers`` package.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol

from quart_app import create_app
from quart_app.config import Settings
from quart_app.stores import RecordStore, store_from_settings
from quart_app.tools.throwaway_postgres import Postgres, throwaway_postgres

# Before the first import of a helper: their asserts explain themselves as a test's do.
pytest.register_assert_rewrite("helpers")

from helpers.disk import tmpfs  # noqa: E402
from helpers.pg import DATABASES, EXTERNAL_URL, Database  # noqa: E402


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
    control (see :func:`helpers.stores.store_of`).
    """

    def make(store: Callable[[RecordStore], RecordStore] | None = None, **config: Any) -> Quart:
        config.setdefault("LOGIN_LOG_PATH", str(log_path))
        if store is None:
            return create_app(config)

        def factory(settings: Settings) -> RecordStore:
            return store(store_from_settings(settings))

        return create_app(config, store_factory=factory)

    return make


@pytest.fixture
async def app(make_app: Callable[..., Quart]) -> Quart:
    return make_app()


@pytest.fixture
async def client(app: Quart) -> AsyncIterator[TestClientProtocol]:
    async with app.test_app() as test_app:
        yield test_app.test_client()


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
                tmpfs(tmp_path / f"disk-{size}-{secrets.token_hex(2)}", size)
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
