"""The PostgreSQL store: one ``INSERT … SELECT … FROM unnest(…)`` per batch, with asyncpg.

Every record gets its id in :meth:`PostgresStore.prepare`, before the first
attempt, and a resend carries the same ids: ``ON CONFLICT DO NOTHING`` makes a
batch that was committed but never confirmed (the connection lost after the
commit) harmless to send again, so each record is stored once. A failure of
the connection or the server drops the connection and raises; the writer
retries with backoff, on a new connection. A batch the server refuses for what
may be its rows (a value the table will never take, a trigger, a row-level
security policy) is split in halves until the rows at fault are found: they are
set aside, the rest are stored; unless the table takes no row at all now (a
privilege revoked, a partition missing), which raises as well.

``LOGIN_LOG_DATABASE_TIMEOUT`` bounds connecting and each statement on both
sides: the client gives up (a hung server is an error, never a hang), and the
server cancels the statement itself (``statement_timeout``), so a statement
stuck behind a lock does not outlive its connection. The password is never
shown: :attr:`PostgresStore.description` and every error name the user, host,
port and database only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

import asyncpg

from ..records import LoginRecord, escape
from .pg_table import TableError, ensure_table, insert_sql

logger = logging.getLogger(__name__)

# SQLSTATE classes of failures no row is at fault for: the connection or the
# server failed, or the session cannot write now. Retried.
_SERVER_FAILURES = frozenset(
    {
        "08",  # connection exception
        "25",  # invalid transaction state: a read-only standby after a failover
        "28",  # invalid authorization
        "3D",  # no such database
        "3F",  # no such schema
        "40",  # transaction rollback: a serialization failure, a deadlock
        "53",  # insufficient resources: disk full, out of memory, too many connections
        "55",  # object not in prerequisite state: a lock not available
        "57",  # operator intervention: a shutdown, the statement timeout
        "58",  # system error
        "F0",  # configuration file error
        "XX",  # internal error
    }
)
# Everything else the database or the network can raise: retried. asyncpg
# raises InternalClientError on a connection the server closed while it was idle.
_DATABASE_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
PROBE_USERNAME = "quart_app probe"
"""The username of the row that tells whether the table takes rows, before any was stored."""


def may_be_the_rows(exc: BaseException) -> bool:
    """Whether the server may have refused ``exc``'s statement for the rows it held.

    True for a value the table will never take (data errors, constraints, an
    index row too large) and for anything else that is neither a failure of
    the connection or the server nor clearly about the whole table, such as a
    trigger's ``RAISE EXCEPTION`` (P0001) or a row-level security policy
    (42501, the SQLSTATE of "permission denied" too): whether the table takes
    other rows tells those apart.
    """
    if not isinstance(exc, asyncpg.PostgresError):
        return False
    sqlstate = exc.sqlstate or "XX000"
    if sqlstate[:2] == "42":  # syntax, a missing table or column: the statement as a whole
        return sqlstate == "42501"
    return sqlstate[:2] not in _SERVER_FAILURES


class _RolledBack(Exception):
    """Ends the probe's transaction: it must leave no row."""


class DatabaseError(OSError):
    """The database could not be used.

    ``strerror`` says why without naming the database or its address, and of
    an error of the server only its class and SQLSTATE (it is shown by
    ``/healthz``); ``str()`` names the database and gives the whole reason,
    for the operator. Neither holds the password.
    """

    def __init__(self, where: str, reason: str, detail: str) -> None:
        super().__init__(None, reason)
        self.where = where
        self.detail = detail

    def __str__(self) -> str:
        return f"cannot use the login log database {self.where}: {self.detail}"


def describe_url(url: str) -> str:
    """``user@host:port/database`` from a ``postgresql://`` URL, without the password.

    A URL ``urlsplit`` cannot read gives a placeholder: its error may quote the URL.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError:
        return "(a URL that cannot be read)"
    query = parse_qs(parts.query)
    # Unquoted, as asyncpg reads it: %2Ftmp is the socket directory /tmp.
    host = unquote(parts.hostname or "") or query.get("host", ["(default host)"])[0]
    if ":" in host:
        host = f"[{host}]"
    user = unquote(parts.username or "") or query.get("user", ["(default user)"])[0]
    database = unquote(parts.path.lstrip("/")) or query.get("dbname", [user])[0]
    return f"{user}@{host}:{port}/{database}"


def new_ids(count: int) -> list[UUID]:
    """``count`` UUIDv7 (RFC 9562): the time in milliseconds, then 74 random bits.

    Ids made together sort together, so the primary key's index grows at its
    end rather than everywhere at once.
    """
    stamp = ((time.time_ns() // 1_000_000) << 80) | (0x7 << 76) | (0b10 << 62)
    random = os.urandom(10 * count)
    ids = []
    for start in range(0, len(random), 10):
        bits = int.from_bytes(random[start : start + 10])
        ids.append(UUID(int=stamp | ((bits >> 62) & 0xFFF) << 64 | (bits & (1 << 62) - 1)))
    return ids


def _reasons(exc: BaseException, timeout: float) -> tuple[str, str]:
    """Why ``exc`` happened: without any address (for ``/healthz``), and in full."""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError):
        reason = f"no answer within {timeout:g} s"
        return reason, reason
    if isinstance(exc, socket.gaierror):
        reason = f"cannot resolve the host name ({exc.strerror})"
        return reason, reason
    if isinstance(exc, OSError):
        # asyncio's messages name the address: keep the system's reason only.
        public = f"{name}: {os.strerror(exc.errno)}" if exc.errno else f"{name}: no connection"
        return public, f"{name}: {exc}"
    if isinstance(exc, asyncpg.InternalClientError):
        reason = f"the connection is unusable ({name}: {exc})"
        return reason, reason
    if isinstance(exc, asyncpg.PostgresError):
        # The server's message may name a role, the table or a value: shown to
        # anyone (/healthz), the class and SQLSTATE only; the operator's log has it all.
        return f"{name} (SQLSTATE {exc.sqlstate})", f"{name}: {exc}"
    return f"{name}: {exc}", f"{name}: {exc}"


@dataclass(slots=True)
class _Batch:
    """A batch's records, and the columns the statement sends, ids included."""

    records: list[LoginRecord]
    ids: list[UUID]
    usernames: list[str]
    times: list[datetime]
    ips: list[str | None]


class PostgresStore:
    """Inserts batches of records into one PostgreSQL table (see the module docstring).

    Only the writer task calls :meth:`write`, one call at a time, so the one
    connection needs no pool and no lock.
    """

    kind = "postgresql"

    def __init__(
        self, url: str, *, table: str = "login_log", host: str = "", timeout: float = 5.0
    ) -> None:
        """``host`` fills the ``host`` column (default: this machine's host name)."""
        self.url = url
        self.table = table
        self.host = host or socket.gethostname()
        self.timeout = timeout
        self.where = describe_url(url)
        self.description = f"PostgreSQL table {table} at {self.where}"
        self._sql = insert_sql(table)
        # Defaults the URL may override: a name for pg_stat_activity, and the
        # server-side half of the timeout.
        settings = {
            "application_name": "quart_app",
            "statement_timeout": str(max(1, round(timeout * 1000))),
        }
        try:
            given = parse_qs(urlsplit(url).query)
        except ValueError:  # open() says so
            given = {}
        self._server_settings = {k: v for k, v in settings.items() if k not in given}
        self._connection: Any = None
        # The username and ip of the last row stored: what _takes_rows tries again.
        self._last_stored: tuple[str, str | None] | None = None

    async def open(self) -> None:
        """Connect, create the table if it is missing and check that it fits.

        Raises :class:`DatabaseError` naming the database and the reason.
        """
        try:
            connection = await self._connect()
            async with asyncio.timeout(self.timeout):
                encoding = await connection.fetchval("SHOW server_encoding")
                if encoding != "UTF8":
                    # Any other encoding cannot hold every username: 张三 would be
                    # answered 200 in default mode, then refused and set aside.
                    reason = f"its encoding is {encoding}, not UTF8: it cannot store every username"
                    raise DatabaseError(self.where, reason, reason)
                await ensure_table(connection, self.table)
        except TableError as exc:
            self._drop_connection()
            reason = f"the table {self.table}: {exc}"
            raise DatabaseError(self.where, reason, reason) from None
        except DatabaseError:
            self._drop_connection()
            raise
        except _DATABASE_ERRORS as exc:
            self._drop_connection()
            raise self._error(exc) from None

    def prepare(self, records: list[LoginRecord]) -> _Batch:
        """The batch's columns, with an id for each record that every attempt reuses."""
        return _Batch(
            records,
            new_ids(len(records)),
            [record.username for record in records],
            [record.time for record in records],
            [None if record.ip == "-" else record.ip for record in records],
        )

    async def write(self, batch: _Batch) -> Sequence[LoginRecord]:
        """Insert ``batch`` in one statement; return the records the table refuses.

        A refusal the rows may be at fault for (:func:`may_be_the_rows`) is
        first checked against the table: if it takes no row now, not even one
        like a row it took before, the fault is the table's, and
        :class:`DatabaseError` is raised for the writer to retry, so a fault of
        the table never sets a batch aside. Otherwise the batch is split until
        the rows at fault are alone: they are returned, the rest are stored.
        Any other failure raises :class:`DatabaseError`.
        """
        try:
            await self._insert(batch, 0, len(batch.records))
        except asyncpg.PostgresError as exc:
            if not await self._takes_rows():
                raise self._error(exc) from None
            return await self._refused(batch, 0, len(batch.records), exc)
        return []

    async def sync(self) -> None:
        """Nothing to do: :meth:`write` returns once its statement has committed."""

    async def close(self) -> None:
        """Close the connection, if any."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close(timeout=self.timeout)
            except BaseException:
                connection.terminate()
                raise

    async def _refused(
        self, batch: _Batch, start: int, stop: int, exc: asyncpg.PostgresError
    ) -> list[LoginRecord]:
        """The records of ``batch[start:stop]``, refused as one with ``exc``, refused alone."""
        if stop - start == 1:
            # Escaped, and its first line only: the server's message, and the
            # detail after it, may quote the username.
            first_line = str(exc).partition("\n")[0]
            reason = escape(f"{type(exc).__name__}: {first_line}")
            logger.error("login log: %s refuses a record: %s", self.description, reason)
            return [batch.records[start]]
        # Halves until the rows at fault are alone: a few statements per bad row.
        middle = (start + stop) // 2
        refused = []
        for low, high in ((start, middle), (middle, stop)):
            try:
                await self._insert(batch, low, high)
            except asyncpg.PostgresError as half_exc:
                refused += await self._refused(batch, low, high, half_exc)
        return refused

    async def _insert(self, batch: _Batch, start: int, stop: int) -> None:
        await self._execute(
            batch.ids[start:stop],
            batch.usernames[start:stop],
            batch.times[start:stop],
            batch.ips[start:stop],
        )
        self._last_stored = batch.usernames[stop - 1], batch.ips[stop - 1]

    async def _takes_rows(self) -> bool:
        """Whether the table takes a row now: the last one stored, tried again.

        With a new id and the time now (no partition for now is the table's
        fault, not the row's), in a transaction rolled back: it leaves no row.
        """
        username, ip = self._last_stored or (PROBE_USERNAME, None)
        try:
            await self._execute(new_ids(1), [username], [datetime.now(UTC)], [ip], rolled_back=True)
        except asyncpg.PostgresError:
            return False
        return True

    async def _execute(
        self,
        ids: list[UUID],
        usernames: list[str],
        times: list[datetime],
        ips: list[str | None],
        *,
        rolled_back: bool = False,
    ) -> None:
        """Run the insert, on a new connection if there is none.

        A refusal the rows may be at fault for is raised as asyncpg raised it,
        the connection kept; any other failure drops the connection and raises
        :class:`DatabaseError`. ``rolled_back``: in a transaction rolled back.
        """
        try:
            connection = self._connection or await self._connect()
            async with asyncio.timeout(self.timeout):
                if not rolled_back:
                    await connection.execute(self._sql, ids, usernames, times, ips, self.host)
                    return
                async with connection.transaction():
                    await connection.execute(self._sql, ids, usernames, times, ips, self.host)
                    raise _RolledBack
        except _RolledBack:
            pass
        except DatabaseError:
            raise
        except _DATABASE_ERRORS as exc:
            if may_be_the_rows(exc):
                raise
            # Whatever state the connection is in, a new one is certain.
            self._drop_connection()
            raise self._error(exc) from None
        except BaseException:
            self._drop_connection()
            raise

    async def _connect(self) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                self._connection = await asyncpg.connect(
                    self.url, timeout=self.timeout, server_settings=self._server_settings
                )
        except (ValueError, TypeError) as exc:
            # asyncpg could not read the URL or a setting in it: its message
            # may quote the URL, password included, so only its class is told.
            reason = (
                f"asyncpg cannot use the URL ({type(exc).__name__}; its text is not shown, "
                "as it may hold the password): percent-encode the user name and password"
            )
            raise DatabaseError(self.where, reason, reason) from None
        return self._connection

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()

    def _error(self, exc: BaseException) -> DatabaseError:
        public, detail = _reasons(exc, self.timeout)
        return DatabaseError(self.where, public, detail)
