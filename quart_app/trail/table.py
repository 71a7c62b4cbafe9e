"""The PostgreSQL table read back: rows found, counted and purged with SQL its indexes serve."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from quart_app.config import ConfigError, DatabaseURL
from quart_app.records import LoginRecord
from quart_app.stores.pg_table import quoted

from .found import Found
from .query import Query
from .where import url_scheme

TIMEOUT = 10.0
"""Seconds for a connection and for each statement (or each fetch of a cursor)."""

PURGE_BATCH = 2000
"""Rows a purge deletes per statement: each is its own short transaction."""


class SourceError(Exception):
    """The table cannot be read at all; the message says why and never holds the password."""


async def connect(url: str, seconds: float = TIMEOUT) -> Any:
    """An asyncpg connection for ``url``; the password may also come from ``PGPASSWORD`` or a
    passfile, as asyncpg reads them. ``seconds`` bounds the connection and each statement.
    Raises :class:`SourceError`."""
    import asyncpg

    from quart_app.stores.postgres import failure_reasons

    scheme = url_scheme(url) or ""
    url = "postgresql" + url[len(scheme) :]  # libpq takes the scheme in any case, as we do
    try:
        checked = DatabaseURL(url, key="the database URL")
    except ConfigError as exc:
        raise SourceError(str(exc)) from None
    try:
        async with asyncio.timeout(seconds):
            return await asyncpg.connect(checked, timeout=seconds, command_timeout=seconds)
    except (ValueError, TypeError) as exc:
        # asyncpg's message may quote the URL, password included.
        raise SourceError(
            f"asyncpg cannot use the URL ({type(exc).__name__}; its text is not shown, as it "
            "may hold the password): percent-encode the user name and password"
        ) from None
    except Exception as exc:  # whatever it is, the source cannot be read
        raise SourceError(
            f"cannot use the database {checked.where}: {failure_reasons(exc, seconds)[1]}"
        ) from None


def _where(query: Query) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if query.user is not None:
        args.append(query.user)
        clauses.append(f"username = ${len(args)}")
    if query.network is not None:
        args.append(query.network)  # asyncpg sends a network as cidr
        clause = f"ip <<= ${len(args)}"
        if query.network.version == 4:  # rows of older versions hold ::ffff:192.0.2.1
            mapped = f"::ffff:{query.network.network_address}/{96 + query.network.prefixlen}"
            args.append(ipaddress.IPv6Network(mapped))
            clause = f"({clause} OR ip <<= ${len(args)})"
        clauses.append(clause)
    if query.since is not None:
        args.append(query.since)
        clauses.append(f"logged_in_at >= ${len(args)}")
    if query.until is not None:
        args.append(query.until)
        clauses.append(f"logged_in_at < ${len(args)}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def search_sql(
    table: str, query: Query, *, last: int | None, newest_first: bool
) -> tuple[str, list[Any]]:
    """The statement for the rows matching ``query``, by time then id; with ``last``, only the
    newest that many (newest first: the caller turns them round)."""
    where, args = _where(query)
    descending = newest_first or last is not None
    order = " DESC" if descending else ""
    sql = (
        f"SELECT username, logged_in_at, ip, host FROM {quoted(table)}{where} "
        f"ORDER BY logged_in_at{order}, id{order}"
    )
    if last is not None:
        args.append(last)
        sql += f" LIMIT ${len(args)}"
    return sql, args


def _found(row: Any) -> Found:
    address = row["ip"]
    if isinstance(address, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        address = address.ip  # a prefix length no store writes
    if address is None:
        ip = "-"
    elif getattr(address, "ipv4_mapped", None):
        ip = f"::ffff:{address.ipv4_mapped}"  # as the older versions that stored it wrote it
    else:
        ip = str(address)
    return Found(LoginRecord(row["username"], row["logged_in_at"], ip), row["host"])


async def search(
    connection: Any,
    table: str,
    query: Query,
    *,
    last: int | None = None,
    newest_first: bool = False,
) -> AsyncIterator[Found]:
    """The rows matching ``query`` by time then id (``newest_first``: the other way round);
    with ``last``, only the newest that many. Streams: a table of millions is never held."""
    sql, args = search_sql(table, query, last=last, newest_first=newest_first)
    if last is not None:
        rows = [_found(row) for row in await connection.fetch(sql, *args)]
        for found in rows if newest_first else reversed(rows):
            yield found
        return
    async with connection.transaction(readonly=True):
        async for row in connection.cursor(sql, *args, prefetch=5000):
            yield _found(row)


async def rows_of(connection: Any, table: str, prefix: str) -> list[Any]:
    """The ids and usernames of the rows whose username starts with ``prefix`` (all if empty)."""
    sql = f"SELECT id, username FROM {quoted(table)} WHERE starts_with(username, $1)"
    return list(await connection.fetch(sql, prefix))


async def count_before(connection: Any, table: str, before: datetime) -> int:
    """How many rows are older than ``before``."""
    sql = f"SELECT count(*) FROM {quoted(table)} WHERE logged_in_at < $1"
    return int(await connection.fetchval(sql, before))


async def purge(
    connection: Any,
    table: str,
    before: datetime,
    *,
    batch: int = PURGE_BATCH,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete the rows older than ``before``, ``batch`` at a time; return how many.

    Each statement is its own short transaction, and the purge rests twice as
    long as each took before the next: deletes take the same lock as inserts
    and never wait for them, but they share the server's CPU and disk with the
    logins coming in (bench/README.md). ``progress`` is told the running total
    after each batch.
    """
    name = quoted(table)
    sql = f"DELETE FROM {name} WHERE id IN (SELECT id FROM {name} WHERE logged_in_at < $1 LIMIT $2)"
    deleted = 0
    while True:
        started = time.monotonic()
        status = await connection.execute(sql, before, batch)
        count = int(status.rsplit(" ", 1)[1])
        deleted += count
        if progress is not None:
            progress(deleted)
        if count < batch:
            return deleted
        await asyncio.sleep(2 * (time.monotonic() - started))
