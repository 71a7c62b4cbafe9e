"""Where ``--verify`` reads the logged usernames from: the log file, or the PostgreSQL table.

A source is anything with an async ``read()`` returning :class:`Logged`. The
counting in :mod:`.verify` only sees usernames (and records it could not
read), so each store has a source of its own: :class:`LogFile` for the file,
:class:`PostgresTable` for the table, and :func:`open_source` picks one from
its address.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

from quart_app.trail import Bad, Found, Tail
from quart_app.trail.where import is_database_url


class Logged(NamedTuple):
    """What a source read: the usernames of its login records, and records it could not read.

    ``unreadable`` holds, as text, what the store holds that is no login
    record: in a log file, a torn or interleaved line. The server writes
    nothing else, so each is a fault.
    """

    usernames: list[str]
    unreadable: list[str]


@runtime_checkable
class LoginSource(Protocol):
    """Logged logins, read a batch at a time.

    A source may also have a ``missing`` attribute: why the log does not
    exist as of the last read (no such file or table), ``None`` if it does."""

    async def read(self) -> Logged:
        """What was logged since the last call: everything on the first call.

        Nothing new for now is an empty batch; the writer may add more later.
        """
        ...


class LogMissing(LookupError):
    """The log (file or table) does not exist: not one login of the run can be in it."""


class LogFile:
    """A login log file, text or JSON Lines, read from where the last call stopped (through
    rotation: see :class:`quart_app.trail.Tail`, whose reading this is).

    A last line without its newline is still being written: it is left for
    the next call. A file not created yet reads as empty, and ``missing``
    then says so (the writer may create it later).
    """

    def __init__(self, path: str | Path) -> None:
        self._tail = Tail(str(path))

    @property
    def missing(self) -> str | None:
        """Why the log cannot be read as of the last read; ``None`` if it can."""
        return self._tail.missing

    async def read(self) -> Logged:
        """The complete lines added since the last call."""
        # In a thread: the log may be large, and the caller's loop may be busy.
        return _logged(await asyncio.to_thread(self._tail.read))


def _logged(items: list[Found | Bad]) -> Logged:
    logged = Logged([], [])
    for item in items:
        if isinstance(item, Bad):
            logged.unreadable.append(f"{item.place}: {item.reason}")
        else:
            logged.usernames.append(item.record.username)
    return logged


class PostgresTable:
    """The PostgreSQL store's table, read with asyncpg as the role of ``url`` (SELECT needed).

    Each call reads the rows whose username starts with ``prefix`` (every row
    when it is empty) and returns those it has not returned before: rows
    commit in any order, so a row is known by its id, not by its place. A
    table not created yet reads as empty, and ``missing`` then says so. A
    call that cannot read raises, and the next one tries again
    (:func:`~.verify.verify_log` does so until its wait is over); each gives
    up after ``timeout`` seconds.
    """

    timeout = 10.0

    def __init__(self, url: str, table: str = "login_log", *, prefix: str = "") -> None:
        self.url = url
        self.table = table
        self.prefix = prefix
        self.missing: str | None = None
        self._seen: set[object] = set()

    async def read(self) -> Logged:
        """The rows added since the last call."""
        import asyncpg

        from quart_app.trail import table as tables

        # A connection per call: a source has no close, and calls are seconds apart at most.
        connection = await tables.connect(self.url, self.timeout)
        try:
            rows = await tables.rows_of(connection, self.table, self.prefix)
            self.missing = None
        except asyncpg.UndefinedTableError:
            self.missing = f"the table {self.table!r} does not exist"
            rows = []
        finally:
            connection.terminate()
        new = [row for row in rows if row["id"] not in self._seen]
        self._seen.update(row["id"] for row in new)
        return Logged([row["username"] for row in new], [])


def open_source(
    where: str | Path | LoginSource, *, table: str = "login_log", prefix: str = ""
) -> LoginSource:
    """``where`` as a source: a source as it is, a ``postgresql://`` URL as its ``table``
    (rows whose username starts with ``prefix``), anything else as a log file's path."""
    if isinstance(where, LoginSource):
        return where
    if is_database_url(where):
        return PostgresTable(str(where), table, prefix=prefix)
    return LogFile(where)
