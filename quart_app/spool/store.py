"""The spool store: the PostgreSQL store, with a local directory for when the database is away.

While the database takes records and the spool is empty, a batch goes straight
to the table, as without a spool. When a write fails, or takes longer than
``spill_after`` (a database that hangs), what the batch has not stored goes to
this worker's spool file instead, each record with the id and everything its
first attempt prepared, marked if its COMMIT went unanswered; from then on
every batch goes to the spool, so that the records of a worker reach the
table in order. The :class:`~.forwarder.Forwarder` inserts the spool files
into the table, on a connection of its own, and hands the writer back to the
table once the spool is empty.

Durable mode's sync makes the spool file durable (``fdatasync``) before the
logins waiting for it are answered. The spool files' I/O runs in daemon
threads: a disk that hangs does not keep a stopped process alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..config import ConfigError, Settings
from ..metrics import SpoolFigures
from ..records import LoginRecord
from ..stores.base import WrappingStore
from ..stores.postgres import DatabaseError, PostgresStore
from ..stores.postgres import from_settings as postgres_from_settings
from ..threads import in_daemon_thread
from . import directory as files
from .directory import SpoolDirectory
from .frames import header_frame, longest_frame, record_frames

SPILL_AFTER = 1.0
"""Seconds a batch may take in the table before it goes to the spool instead; at most the
database timeout and half ``LOGIN_LOG_FULL_TIMEOUT``, so that a hung database costs no login."""

SEGMENT_BYTES = 4 << 20
"""A spool file past this size is closed and a new one started: files are forwarded whole."""


class SpoolFull(OSError):
    """The spool directory holds ``LOGIN_LOG_SPOOL_MAX_BYTES`` already."""


@dataclass(slots=True)
class Segment:
    """A spool file this process holds locked: its own, or adopted from a dead process.

    ``exact``: written by this process, so its records' marks are exact; an
    adopted file's records may have been forwarded before its writer died.
    """

    name: str
    fd: int
    size: int
    exact: bool
    records: int = 0
    first_time: datetime | None = None
    forwarded: int = 0
    dirty: bool = False


@dataclass(slots=True)
class _SpoolBatch:
    """The table's batch, and what of it went to the spool when it did."""

    inner: Any
    count: int
    frames: list[bytes] | None = None
    first_time: datetime | None = None
    spooled: int = 0
    set_aside: list[LoginRecord] = field(default_factory=list)


def _in_thread(function: Callable[[], Any]) -> Any:
    return in_daemon_thread(function, name="login-log-spool")


class SpoolStore(WrappingStore):
    """A :class:`~quart_app.stores.postgres.PostgresStore` with a spool (see the module docstring).

    ``forwarding``: a second store of the same table, for the forwarder's own
    connection. ``directory``: the spool directory, bound to the table.
    """

    inner: PostgresStore

    def __init__(
        self,
        inner: PostgresStore,
        directory: SpoolDirectory,
        *,
        forwarding: PostgresStore,
        spill_after: float = SPILL_AFTER,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(inner)
        self.directory = directory
        self.forwarding = forwarding
        self.spill_after = min(spill_after, inner.timeout)
        self.logger = logger or logging.getLogger("quart_app.spool")
        self.spooling = False
        self.database_error: str | None = None  # why the table is not written to directly
        self.table_error: str | None = None  # the table found unusable: not ready
        self.write_error: str | None = None  # the spool could not be written: not ready
        self.forward_error: str | None = None  # a failure of the forwarding itself: not ready
        self.active: Segment | None = None
        self.closed: deque[Segment] = deque()  # own files to forward, oldest first
        self.forwarded = self.rejected = self.torn = 0
        self.moved_aside = self.moved_aside_bytes = 0
        self.lock = asyncio.Lock()  # the active file: appending, rotating, going direct
        self._header_size = len(header_frame(directory.binding))
        self._sequence = 0
        self._forwarder: Any = None

    async def open(self) -> None:
        """Check and bind the spool directory; open the table, or start spooling if it is away.

        Raises :class:`~.directory.SpoolDirError` for a directory that cannot be
        used, and :class:`~quart_app.stores.postgres.DatabaseError` for a table
        that cannot hold the records or a password refused: those need a person.
        """
        from .forwarder import Forwarder

        self.lock = asyncio.Lock()  # bound to the loop serving
        for warning in await _in_thread(self.directory.open):
            self.logger.warning("login log: %s", warning)
        try:
            await self.inner.open()
        except DatabaseError as exc:
            if exc.lasting:
                await _in_thread(self.directory.close)
                raise
            self.go_to_spool(exc)
        self._forwarder = Forwarder(self)
        self._forwarder.start()

    def prepare(self, records: list[LoginRecord]) -> _SpoolBatch:
        """The table's batch of ``records``: ids fixed now, kept if it goes to the spool."""
        return _SpoolBatch(self.inner.prepare(records), len(records))

    async def write(self, batch: _SpoolBatch) -> Sequence[LoginRecord]:
        """Insert ``batch`` into the table, or append what it has not stored to the spool.

        Raises :class:`SpoolFull` when the spool has no room for all of it (what
        fitted stays spooled: the writer's retry appends the rest), and the
        ``OSError`` of a spool file that cannot be written.
        """
        while True:
            if not self.spooling and batch.frames is None:
                try:
                    async with asyncio.timeout(self.spill_after):
                        return await self.inner.write(batch.inner)
                except Exception as exc:
                    self.go_to_spool(exc)
            async with self.lock:
                # The forwarder may have emptied the spool meanwhile and gone back to the
                # table; unless part of this batch is spooled already.
                if self.spooling or batch.frames is not None:
                    self.spooling = True
                    await self._spool_safely(batch)
                    break
        if self._forwarder is not None:
            self._forwarder.wake()
        return batch.set_aside

    async def sync(self) -> None:
        """Make what was spooled durable (``fdatasync``), or sync the table's store."""
        async with self.lock:  # the forwarder may neither rotate nor remove the file meanwhile
            segment = self.active
            if segment is not None and segment.dirty:
                segment.dirty = False
                try:
                    await _in_thread(lambda: files.datasync(segment.fd))
                except OSError:
                    segment.dirty = True
                    raise
        await self.inner.sync()

    async def close(self) -> None:
        """Stop forwarding, make the spool durable and release it; close the connections."""
        if self._forwarder is not None:
            await self._forwarder.stop()
            self._forwarder = None
        async with self.lock:
            segments = [*self.closed, *([self.active] if self.active else [])]
            self.active, self.closed = None, deque()
            await _in_thread(lambda: self._release(segments))
        for store in (self.inner, self.forwarding):
            with contextlib.suppress(Exception):
                await store.close()

    async def _spool_safely(self, batch: _SpoolBatch) -> None:
        # The lock held: append, and keep why it failed for /readyz.
        try:
            await _in_thread(lambda: self._spool(batch))
        except SpoolFull as exc:
            self.write_error = exc.strerror
            raise
        except OSError as exc:
            self.write_error = f"the spool cannot be written ({exc.strerror})"
            raise
        self.write_error = None

    @property
    def spool(self) -> SpoolStore:
        """This store: it is the spool whose figures the writer shows."""
        return self

    def go_to_spool(self, exc: BaseException) -> None:
        """Write batches to the spool from now on, because of ``exc`` (the table failed)."""
        reason = _reason(exc, self.spill_after)
        if not self.spooling:
            self.logger.warning(
                "login log: %s cannot take records now (%s); they go to the spool %s "
                "and are forwarded once it can",
                self.inner.description,
                reason,
                self.directory.path,
            )
        self.spooling = True
        self.database_error = reason

    def figures(self) -> SpoolFigures:
        """Records and bytes in this process's spool files, the oldest's age, and the counts."""
        segments = [*self.closed, *([self.active] if self.active else [])]
        if self._forwarder is not None:
            segments += self._forwarder.held()
        firsts = [s.first_time for s in segments if s.first_time and s.records > s.forwarded]
        age = 0.0
        if firsts:
            age = max(0.0, time.time() - min(firsts).timestamp())
        return SpoolFigures(
            records=sum(s.records - s.forwarded for s in segments),
            bytes=sum(s.size for s in segments),
            oldest_age=age,
            forwarded=self.forwarded,
            rejected=self.rejected,
            torn=self.torn,
            moved_aside=self.moved_aside,
            moved_aside_bytes=self.moved_aside_bytes,
        )

    def stats(self) -> dict[str, Any]:
        """The spool's state for ``/healthz`` (no path, no address)."""
        figures = self.figures()
        return {
            "database": "spooling" if self.spooling else "direct",
            "database_error": self.database_error if self.spooling else None,
            "records": figures.records,
            "bytes": figures.bytes,
            "max_bytes": self.directory.max_bytes,
            "oldest_age_s": round(figures.oldest_age, 3),
            "forwarded": figures.forwarded,
            "rejected": figures.rejected,
            "torn": figures.torn,
            "moved_aside": figures.moved_aside,
        }

    def not_ready_because(self) -> list[str]:
        """Why the spool should get no traffic: full, not writable, or stuck; else nothing."""
        return [
            reason
            for reason in (self.write_error, self.table_error, self.forward_error)
            if reason is not None
        ]

    def _spool(self, batch: _SpoolBatch) -> None:
        # In a thread, the lock held: append what fits, all workers together.
        if batch.frames is None:
            left = self.inner.unfinished(batch.inner)
            batch.frames = record_frames(
                left.records, left.ids, left.host, left.maybe_stored, left.stream, left.positions
            )
            batch.set_aside = left.set_aside
            batch.first_time = left.records[0].time if left.records else None
        if batch.spooled == len(batch.frames):
            return
        with self.directory.locked():
            room = self.directory.max_bytes - self.directory.used_bytes()
            segment = self.active
            if segment is None or segment.size >= SEGMENT_BYTES:
                room -= self._header_size
            count, size = 0, 0
            for piece in batch.frames[batch.spooled :]:
                if size + len(piece) > room:
                    break
                count, size = count + 1, size + len(piece)
            if count:
                segment = self._writable_segment()
                data = b"".join(batch.frames[batch.spooled : batch.spooled + count])
                files.append(segment.fd, segment.size, data)
                segment.size += len(data)
                segment.records += count
                segment.dirty = True
                if segment.first_time is None:
                    segment.first_time = batch.first_time
                batch.spooled += count
            used = self.directory.used_bytes() if batch.spooled < len(batch.frames) else 0
        if batch.spooled < len(batch.frames):
            raise SpoolFull(
                errno.ENOSPC,
                f"the spool is full ({used} of {self.directory.max_bytes} bytes)",
            )

    def _writable_segment(self) -> Segment:
        segment = self.active
        if segment is not None and segment.size < SEGMENT_BYTES:
            return segment
        if segment is not None:
            self._close_active()
        self._sequence += 1
        prefix = f"{time.time_ns():020d}-{os.getpid()}-{self._sequence:06d}"
        name, fd, size = self.directory.create(prefix)
        self.active = Segment(name, fd, size, exact=True)
        return self.active

    def _close_active(self) -> None:
        # In a thread, the lock held: the file is forwarded once synced, still locked.
        segment, self.active = self.active, None
        if segment is not None:
            files.datasync(segment.fd)
            segment.dirty = False
            self.closed.append(segment)

    def _release(self, segments: list[Segment]) -> None:
        for segment in segments:
            with contextlib.suppress(OSError):
                files.datasync(segment.fd)
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        self.directory.close()


def _reason(exc: BaseException, spill_after: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {spill_after:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


_NOT_WHERE = frozenset(
    {"host", "port", "user", "dbname", "database", "password", "passfile", "sslpassword"}
    | {"sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "ssl_min_protocol_version"}
    | {"ssl_max_protocol_version", "connect_timeout", "application_name"}
)


def server_settings(url: str) -> str:
    """The URL's query parameters that may change which table its name is (``search_path``,
    ``options``, ``service``...), in order: a spool directory is bound to them too. Not
    the password, nor what only changes how the connection is made."""
    query = parse_qs(urlsplit(url).query)
    return "&".join(
        f"{name}={value}"
        for name, values in sorted(query.items())
        if name not in _NOT_WHERE
        for value in values
    )


def from_settings(inner: Any, settings: Settings) -> SpoolStore:
    """Spool ``inner`` (the PostgreSQL store) in ``LOGIN_LOG_SPOOL_DIR``."""
    if not isinstance(inner, PostgresStore):
        raise TypeError("only the PostgreSQL store can be spooled")
    binding = {
        "database": inner.url.where.partition("@")[2],
        "table": inner.table,
        "host": inner.host,
        "settings": server_settings(inner.url),
    }
    longest = longest_frame(
        inner.host, settings.username_max_length, sealed=bool(settings.login_log_seal_key)
    )
    least = len(header_frame(binding)) + longest
    if settings.login_log_spool_max_bytes < least:
        # Else the longest login would never fit, even in an empty spool.
        raise ConfigError(
            f"LOGIN_LOG_SPOOL_MAX_BYTES must be at least {least} with this database, table, "
            "host and USERNAME_MAX_LENGTH: room for a spool file's header and the longest record"
        )
    directory = SpoolDirectory(
        settings.login_log_spool_dir, binding, settings.login_log_spool_max_bytes
    )
    # Well within the time a login waits for its record, so that a hung database costs none.
    spill_after = min(SPILL_AFTER, max(settings.login_log_full_timeout / 2, 0.05))
    return SpoolStore(
        inner, directory, forwarding=postgres_from_settings(settings), spill_after=spill_after
    )
