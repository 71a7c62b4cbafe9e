"""The PostgreSQL store: one ``INSERT … SELECT … FROM unnest(…)`` per batch, with asyncpg.

Every record gets its id in :meth:`PostgresStore.prepare`, before the first
attempt, and a resend carries the same ids: ``ON CONFLICT DO NOTHING`` makes a
batch that was committed but never confirmed (the connection lost during the
commit) harmless to send again, so each record is stored once. A failure of
the connection or the server drops the connection and raises; the writer
retries with backoff, on a new connection.

``ON CONFLICT DO NOTHING`` also skips, without an error, a row that a unique
index added later refuses; so do a trigger returning NULL and a ``DO INSTEAD
NOTHING`` rule. The INSERT runs in a transaction committed only when its
command tag counts every row: a role that may only insert cannot use
``RETURNING id``, nor tell afterwards which rows were skipped. A batch the
server refuses for what may be its rows (a value the table will never take, a
trigger, a row-level security policy), or of which it skips rows, is split in
halves until the rows at fault are found: they are set aside, the rest are
stored; unless the table takes no row at all now (a privilege revoked, a
partition missing, a rule), which raises as well.

``LOGIN_LOG_DATABASE_TIMEOUT`` bounds connecting and each statement on both
sides: the client gives up (a hung server is an error, never a hang), and the
server cancels the statement itself (``statement_timeout``), so a statement
stuck behind a lock does not outlive its connection. The password is never
shown: :attr:`PostgresStore.description` and every error name the user, host,
port and database only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol
from uuid import UUID

import asyncpg

from ..config import ConfigError, DatabaseURL, Settings
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
"""The username of the row that tells whether the table takes rows, when the last row stored
is not taken again or none was."""
SKIPPED = "skipped without an error (a unique index, a trigger returning NULL, a rule)"
"""Why a row the INSERT did not take, with no error, is set aside."""


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


class DatabaseError(OSError):
    """The database could not be used.

    ``strerror`` says why without naming the database or its address, and of
    an error of the server only its class and SQLSTATE (it is shown by
    ``/healthz``); ``str()`` names the database and gives the whole reason,
    for the operator. Neither holds the password.
    """

    def __init__(
        self, where: str, reason: str, detail: str, *, sqlstate: str = "", lasting: str = ""
    ) -> None:
        super().__init__(None, reason)
        self.where = where
        self.detail = detail
        self.sqlstate = sqlstate
        self.lasting = lasting
        """Empty for a failure that may pass (the database away); ``"setup"`` for one that
        lasts until a person acts on the URL or the role; ``"table"`` for a table (or an
        encoding) that cannot hold the records."""

    def __str__(self) -> str:
        return f"cannot use the login log database {self.where}: {self.detail}"


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


def failure_reasons(exc: BaseException, timeout: float) -> tuple[str, str]:
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
    """A batch's records, the columns the statement sends (ids and host included), and how
    far it got.

    ``left`` holds the parts ``(start, stop)`` neither stored nor set aside,
    in order: writing the batch again after a failure goes on from the first.
    ``unsettled`` maps the start of each part that may be committed already
    to whether it is all or nothing: true for a part whose COMMIT went
    unanswered (one transaction), false for one :meth:`PostgresStore.restore`
    was told of. Which of their rows are in the table is found out before
    they are sent.
    """

    records: list[LoginRecord]
    ids: list[UUID]
    usernames: list[str]
    times: list[datetime]
    ips: list[str | None]
    host: str
    left: list[tuple[int, int]]
    set_aside: list[LoginRecord] = field(default_factory=list)
    unsettled: dict[int, bool] = field(default_factory=dict)
    stream: str | None = None
    positions: list[int | None] | None = None
    """A sealed table's: the rows' stream and positions, fixed by :meth:`Sealing.stamp`."""


class Sealing(Protocol):
    """What seals a table's rows (:mod:`quart_app.seal.table`): told of every batch."""

    def stamp(self, batch: _Batch) -> None:
        """Give a new batch its stream and positions, before its first attempt."""

    def settled(self, batch: _Batch, start: int, stop: int, *, set_aside: bool) -> None:
        """``batch[start:stop]`` is committed, or (``set_aside``) will never be stored."""


class Unfinished(NamedTuple):
    """What a batch has not stored yet, as :meth:`PostgresStore.unfinished` gives it."""

    records: list[LoginRecord]
    ids: list[UUID]
    host: str
    maybe_stored: list[bool]
    """Per record: whether it may be in the table already (its COMMIT went unanswered)."""
    set_aside: list[LoginRecord]
    stream: str | None = None
    positions: list[int | None] | None = None


class PostgresStore:
    """Inserts batches of records into one PostgreSQL table (see the module docstring).

    Only the writer task calls :meth:`write`, one call at a time, so the one
    connection needs no pool and no lock.
    """

    kind = "postgresql"

    def __init__(
        self, url: str, *, table: str = "login_log", host: str = "", timeout: float = 5.0
    ) -> None:
        """``url``: a :class:`~quart_app.config.DatabaseURL`, or a URL's text, checked here.

        A URL that fails the check, or none, makes :meth:`open` raise
        :class:`DatabaseError`, as any database that cannot be used does.
        ``host`` fills the ``host`` column (default: this machine's host name).
        """
        try:
            self.url = url if isinstance(url, DatabaseURL) else DatabaseURL(url)
        except ConfigError as exc:  # its message never quotes the URL
            self.url, self._unusable = DatabaseURL(), str(exc)
        else:
            self._unusable = "" if self.url else "no database URL was given"
        self.table = table
        self.host = host or socket.gethostname()
        self.timeout = timeout
        self.where = self.url.where or "(a URL that cannot be used)"
        self.description = f"PostgreSQL table {table} at {self.where}"
        self.sealing: Sealing | None = None
        """Set before :meth:`open` to seal the table: its rows get a stream and positions."""
        self._sql = insert_sql(table)
        # Defaults the URL may override: a name for pg_stat_activity, and the
        # server-side half of the timeout.
        settings = {
            "application_name": "quart_app",
            "statement_timeout": str(max(1, round(timeout * 1000))),
        }
        self._server_settings = {k: v for k, v in settings.items() if k not in self.url.query_names}
        self._connection: Any = None
        # The last row stored: what _takes_rows tries again.
        self._last_stored: LoginRecord | None = None

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
                    raise DatabaseError(self.where, reason, reason, lasting="table")
                await ensure_table(connection, self.table, sealed=self.sealing is not None)
                if self.sealing is not None:
                    self._sql = insert_sql(self.table, sealed=True)
        except TableError as exc:
            self._drop_connection()
            reason = f"the table {self.table}: {exc}"
            raise DatabaseError(self.where, reason, reason, lasting="table") from None
        except DatabaseError:
            self._drop_connection()
            raise
        except _DATABASE_ERRORS as exc:
            self._drop_connection()
            raise self._error(exc) from None

    def prepare(self, records: list[LoginRecord]) -> _Batch:
        """The batch's columns, with an id for each record that every attempt reuses (and, in
        a sealed table, its stream and position)."""
        batch = self.restore(records, new_ids(len(records)), self.host)
        if self.sealing is not None:
            self.sealing.stamp(batch)
        return batch

    def restore(
        self,
        records: list[LoginRecord],
        ids: list[UUID],
        host: str,
        maybe_stored: Sequence[bool] = (),
        *,
        stream: str | None = None,
        positions: list[int | None] | None = None,
    ) -> _Batch:
        """A batch of ``records`` with the ids and host an earlier attempt prepared them with.

        ``maybe_stored``, per record: whether it may be in the table already
        (what :meth:`unfinished` said of it, or every record a crash left
        unsure of); those are found out before anything is sent, so that a
        resend stores each record once and sets none aside for being there.
        ``stream`` and ``positions``: a sealed table's, as first stamped.
        """
        left: list[tuple[int, int]] = []
        unsettled: dict[int, bool] = {}
        start = 0
        flags = list(maybe_stored) or [False] * len(records)
        for stop in range(1, len(records) + 1):
            if stop == len(records) or flags[stop] != flags[start]:
                left.append((start, stop))
                if flags[start]:
                    unsettled[start] = False
                start = stop
        return _Batch(
            records,
            ids,
            [record.username for record in records],
            [record.time for record in records],
            [None if record.ip == "-" else record.ip for record in records],
            host,
            left,
            unsettled=unsettled,
            stream=stream,
            positions=positions,
        )

    def unfinished(self, batch: _Batch) -> Unfinished:
        """What ``batch`` has not stored, for a store that keeps it elsewhere (a spool).

        The records of the parts left, with their ids and host, each marked if
        it may be stored already; and the records set aside so far.
        """
        records: list[LoginRecord] = []
        ids: list[UUID] = []
        maybe: list[bool] = []
        positions: list[int | None] | None = [] if batch.positions is not None else None
        for start, stop in batch.left:
            records += batch.records[start:stop]
            ids += batch.ids[start:stop]
            maybe += [start in batch.unsettled] * (stop - start)
            if positions is not None and batch.positions is not None:
                positions += batch.positions[start:stop]
        return Unfinished(
            records, ids, batch.host, maybe, list(batch.set_aside), batch.stream, positions
        )

    async def write(self, batch: _Batch) -> Sequence[LoginRecord]:
        """Insert ``batch``; return the records the table refuses or skips.

        Each part of the batch is inserted in a transaction committed only if
        the INSERT took every row of it, so a row skipped without an error is
        never counted as stored. A part refused for what may be its rows
        (:func:`may_be_the_rows`), or with rows skipped, is rolled back and
        split in halves until the rows at fault are alone: they are returned,
        the rest are stored. When no row is taken, the table is checked first:
        if it takes no row now, not even one like a row it took before, the
        fault is the table's, and :class:`DatabaseError` is raised for the
        writer to retry, so a fault of the table never sets a batch aside. Any
        other failure raises :class:`DatabaseError`; the batch written again
        goes on where it stopped.
        """
        takes_rows = False  # whether the table took a row during this call
        while batch.left:
            start, stop = batch.left[0]
            if start in batch.unsettled:
                if await self._stored_unless_there(batch, start, stop):
                    batch.left.pop(0)
                    takes_rows = True
                else:
                    await self._settle(batch)
                continue
            refusal: asyncpg.PostgresError | None = None
            try:
                taken = await self._insert(batch, start, stop)
            except asyncpg.PostgresError as exc:
                taken, refusal = 0, exc
            if taken == stop - start:  # and committed
                batch.left.pop(0)
                takes_rows = True
                continue
            if not (takes_rows or taken or await self._takes_rows()):
                raise self._takes_none(refusal)
            takes_rows = True
            if stop - start > 1:
                # Halves until the rows at fault are alone: a few statements per such row.
                middle = (start + stop) // 2
                batch.left[:1] = [(start, middle), (middle, stop)]
                continue
            if refusal is None:
                reason = SKIPPED
            else:
                # Escaped, and its first line only: the server's message, and
                # the detail after it, may quote the username.
                first_line = str(refusal).partition("\n")[0]
                reason = escape(f"{type(refusal).__name__}: {first_line}")
            logger.error("login log: %s refuses a record: %s", self.description, reason)
            batch.set_aside.append(batch.records[start])
            batch.left.pop(0)
            self._settled(batch, start, start + 1, set_aside=True)
        return batch.set_aside

    async def sync(self) -> None:
        """Nothing to do: :meth:`write` returns once what it stored has committed."""

    async def close(self) -> None:
        """Close the connection, if any."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close(timeout=self.timeout)
            except BaseException:
                connection.terminate()
                raise

    async def _stored_unless_there(self, batch: _Batch, start: int, stop: int) -> bool:
        """Store ``batch[start:stop]``, that may be committed, if none of it is: whether it was.

        The INSERT, committed only if it takes every row with its own id, is
        what :meth:`_committed` would try first (rolled back) before the same
        INSERT for real: most often (a crash before the part was sent) it
        tells and stores at once, one statement instead of two.
        """
        try:
            return await self._insert(batch, start, stop) == stop - start
        except asyncpg.PostgresError:
            return False

    async def _settle(self, batch: _Batch) -> None:
        """Find out which rows of the first part left, which may be committed, are.

        Those committed are stored; the others stay, to be sent as any other
        part. Rows nothing tells of are set aside, with a log line saying they
        may or may not be stored; unless the table takes no row now, which
        raises for the writer to try again later.
        """
        start, stop = batch.left[0]
        found = await self._committed(batch, start, stop)
        told = [committed for _, _, committed in found if committed is not None]
        if batch.unsettled[start] and told:
            # One transaction: what some rows tell holds for all (a row refused now,
            # a CHECK added since, is committed with the others).
            found = [(start, stop, told[0])]
        unknown = sum(high - low for low, high, committed in found if committed is None)
        if unknown and not await self._takes_rows():
            raise self._takes_none(None)
        del batch.unsettled[start]
        batch.left[:1] = [(low, high) for low, high, committed in found if committed is False]
        for low, high, committed in found:
            if committed:
                self._last_stored = batch.records[high - 1]
                self._settled(batch, low, high, set_aside=False)
            elif committed is None:
                batch.set_aside += batch.records[low:high]
                self._settled(batch, low, high, set_aside=True)
        if unknown:
            # The records themselves are logged once, by the writer, as set aside.
            logger.error(
                "login log: %s cannot tell whether %d records were stored: they may have been "
                "committed, and it now skips or refuses them, with new ids too; set aside, "
                "they may or may not be stored",
                self.description,
                unknown,
            )

    async def _committed(
        self, batch: _Batch, start: int, stop: int
    ) -> list[tuple[int, int, bool | None]]:
        """Which rows of ``batch[start:stop]``, that may be committed, are: ``(start, stop,
        committed)`` in order, None where nothing tells.

        Tried in transactions rolled back: rows taken with their own ids were
        not committed; rows skipped with their own ids but taken with new ones
        were (their ids are there). A part that is neither all one nor all the
        other, or refused with an error, is tried in halves: a part whose
        COMMIT went unanswered, all or nothing, takes two statements.
        """
        count = stop - start
        try:
            taken = await self._insert(batch, start, stop, commit=False)
            if taken == count:
                return [(start, stop, False)]
            if taken == 0:
                fresh = await self._insert(batch, start, stop, commit=False, fresh=True)
                if fresh == count:
                    return [(start, stop, True)]
        except asyncpg.PostgresError:
            pass
        if count == 1:
            return [(start, stop, None)]
        middle = (start + stop) // 2
        return await self._committed(batch, start, middle) + await self._committed(
            batch, middle, stop
        )

    async def _takes_rows(self) -> bool:
        """Whether the table takes a row now: the last one stored, else one for PROBE_USERNAME.

        Each with a new id and the time now (no partition for now is the
        table's fault, not the row's), in a transaction rolled back: it leaves
        no row. The second tells a table that takes no row from one that
        skips the first because a row like it is there (a unique index on
        username).
        """
        now = datetime.now(UTC)
        probes = [LoginRecord(PROBE_USERNAME, now, "-")]
        if self._last_stored is not None:
            probes.insert(0, self._last_stored._replace(time=now))
        for probe in probes:
            with contextlib.suppress(asyncpg.PostgresError):
                # Not prepare(): a probe takes no place in a sealed table's stream.
                check = self.restore([probe], new_ids(1), self.host)
                if await self._insert(check, 0, 1, commit=False) == 1:
                    return True
        return False

    def _takes_none(self, refusal: asyncpg.PostgresError | None) -> DatabaseError:
        """The error for a table that takes no row now, refusing (``refusal``) or skipping them.

        The connection is dropped: PostgreSQL keeps a prepared INSERT that a
        ``DO INSTEAD NOTHING`` rule rewrote to nothing as it is after the rule
        is dropped, and a new connection prepares it afresh.
        """
        self._drop_connection()
        if refusal is not None:
            public, detail = failure_reasons(refusal, self.timeout)
            sqlstate = refusal.sqlstate or ""
            return DatabaseError(self.where, public, detail, sqlstate=sqlstate, lasting="table")
        reason = "the table takes no row: it skips every one without an error, the check's too"
        return DatabaseError(self.where, reason, reason, lasting="table")

    async def _insert(
        self, batch: _Batch, start: int, stop: int, *, commit: bool = True, fresh: bool = False
    ) -> int:
        """Insert ``batch[start:stop]`` in a transaction; return how many rows the INSERT took.

        Committed when ``commit`` and every row was taken (``start`` in
        ``unsettled`` while the COMMIT is unanswered), rolled back otherwise:
        then it leaves no row. ``fresh``: with new ids. A refusal the rows may be at fault for is
        raised as asyncpg raised it, the connection kept; any other failure
        drops the connection and raises :class:`DatabaseError`. Connecting,
        if there is no connection, and each statement have the timeout.
        """
        ids = new_ids(stop - start) if fresh else batch.ids[start:stop]
        rows: tuple[Any, ...] = (
            ids,
            batch.usernames[start:stop],
            batch.times[start:stop],
            batch.ips[start:stop],
            batch.host,
        )
        if self.sealing is not None:
            # Fresh ids try whether the rows' ids are there: without a stream, so that
            # the key on (stream, position) does not skip them too.
            positions = batch.positions
            if fresh or positions is None or batch.stream is None:
                rows += (None, [None] * (stop - start))
            else:
                rows += (batch.stream, positions[start:stop])
        try:
            connection = self._connection or await self._connect()
            transaction = connection.transaction()
            async with asyncio.timeout(self.timeout):
                await transaction.start()
            try:
                async with asyncio.timeout(self.timeout):
                    tag = await connection.execute(self._sql, *rows)
            except asyncpg.PostgresError as exc:
                if may_be_the_rows(exc):  # the connection is kept: end its transaction
                    async with asyncio.timeout(self.timeout):
                        await transaction.rollback()
                raise
            taken = int(tag.rpartition(" ")[2])  # "INSERT 0 <rows taken>"
            if not commit or taken != stop - start:
                async with asyncio.timeout(self.timeout):
                    await transaction.rollback()
                return taken
            batch.unsettled[start] = True
            try:
                async with asyncio.timeout(self.timeout):
                    await transaction.commit()
            except asyncpg.PostgresError as exc:
                # Refused at COMMIT (a deferred trigger or constraint): nothing committed.
                if may_be_the_rows(exc):
                    batch.unsettled.pop(start, None)
                raise
            batch.unsettled.pop(start, None)
            self._last_stored = batch.records[stop - 1]
            self._settled(batch, start, stop, set_aside=False)
            return taken
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

    async def connect_apart(self) -> Any:
        """A connection of its own, made as this store's are (URL, settings, timeout); the
        caller closes it. Raises :class:`DatabaseError`, as :meth:`write` does."""
        try:
            return await self._new_connection()
        except DatabaseError:
            raise
        except _DATABASE_ERRORS as exc:
            raise self._error(exc) from None

    def _settled(self, batch: _Batch, start: int, stop: int, *, set_aside: bool) -> None:
        if self.sealing is not None and batch.stream is not None:
            self.sealing.settled(batch, start, stop, set_aside=set_aside)

    async def _connect(self) -> Any:
        self._connection = await self._new_connection()
        return self._connection

    async def _new_connection(self) -> Any:
        if self._unusable:
            raise DatabaseError(self.where, self._unusable, self._unusable, lasting="setup")
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncpg.connect(
                    self.url, timeout=self.timeout, server_settings=self._server_settings
                )
        except (ValueError, TypeError) as exc:
            # asyncpg could not read the URL or a setting in it: its message
            # may quote the URL, password included, so only its class is told.
            reason = (
                f"asyncpg cannot use the URL ({type(exc).__name__}; its text is not shown, "
                "as it may hold the password): percent-encode the user name and password"
            )
            raise DatabaseError(self.where, reason, reason, lasting="setup") from None

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()

    def _error(self, exc: BaseException) -> DatabaseError:
        public, detail = failure_reasons(exc, self.timeout)
        sqlstate = getattr(exc, "sqlstate", None)
        sqlstate = sqlstate if isinstance(sqlstate, str) else ""
        # A password or role refused (28): nothing to wait out.
        lasting = "setup" if sqlstate.startswith("28") else ""
        return DatabaseError(self.where, public, detail, sqlstate=sqlstate, lasting=lasting)


def from_settings(settings: Settings) -> PostgresStore:
    """The table ``LOGIN_LOG_TABLE`` of the database at ``LOGIN_LOG_DATABASE_URL``."""
    return PostgresStore(
        settings.login_log_database_url,
        table=settings.login_log_table,
        host=settings.login_log_host,
        timeout=settings.login_log_database_timeout,
    )
