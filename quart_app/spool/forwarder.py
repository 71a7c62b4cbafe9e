"""The forwarder: spooled records into the table, exactly once, then the writer back to it.

One task per process, on a connection of its own, so that a backlog never
holds up the writer. It forwards this process's closed spool files in order,
then files whose process died (their lock is free), then this process's
current file, closed first; once nothing is left it hands the writer back to
the table. A record keeps the id its first attempt gave it, and records that
may be in the table already (an unanswered COMMIT, or any record of a file
adopted after a crash) are checked first, so that none is stored twice and
none is mistaken for refused. A file is deleted only once every record of it
is committed or in ``rejected.jsonl``; unreadable pieces are kept in
``damaged/`` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from typing import TYPE_CHECKING, Any

from ..records import text_lines
from ..stores.postgres import DatabaseError
from ..writer.errors import describe_error, one_line
from . import directory as files
from . import frames
from .store import Segment, _in_thread

if TYPE_CHECKING:
    from .store import SpoolStore

BATCH = 2048
"""Records per INSERT: the writer's largest batch."""
RETRY_FIRST, RETRY_MAX = 0.05, 2.0
IDLE = 1.0
"""Seconds between looks for files a dead process left, while nothing is spooled."""


class Forwarder:
    """Forwards a :class:`~.store.SpoolStore`'s spool into its table (see the module docstring)."""

    def __init__(self, store: SpoolStore) -> None:
        self.store = store
        self.current: Segment | None = None
        self.adopted: deque[Segment] = deque()
        self._wake = asyncio.Event()
        self._opened = False
        self._logged: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start forwarding, in a task of its own."""
        self._task = asyncio.create_task(self._run(), name="login-log-forwarder")

    def wake(self) -> None:
        """Look for work now: records were spooled."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop at once; what is not forwarded stays in the spool, for the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        held = self.held()
        self.current, self.adopted = None, deque()
        for segment in held:
            if segment.fd >= 0:  # not handed to a removal that was under way
                os.close(segment.fd)

    def held(self) -> list[Segment]:
        """The files this forwarder holds: the one it forwards, and those adopted."""
        return [*([self.current] if self.current else []), *self.adopted]

    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                segment = self.current or await self._next()
                if segment is None:
                    await self._idle()
                    continue
                self.current = segment
                if not await self._table_ready():
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                try:
                    await self._forward(segment)
                except Exception:
                    # Retried: the records of the batch that failed may be in the table.
                    segment.exact = False
                    if segment.fd < 0:  # its removal failed, the fd closed: adopted again
                        self.current = None
                    raise
                self.current = None
                delay = RETRY_FIRST
                self._fine()
            except Exception as exc:  # reading a spool file, writing rejects: not the table
                self._failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _idle(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(IDLE):
                await self._wake.wait()

    async def _next(self) -> Segment | None:
        store = self.store
        if store.closed:
            return store.closed.popleft()
        if not self.adopted:
            self.adopted.extend(await _in_thread(self._adopt))
        if self.adopted:
            return self.adopted.popleft()
        spooled = store.active is not None and store.active.records > 0
        if not (store.spooling or spooled) or not await self._table_ready():
            return None
        async with store.lock:
            if store.active is not None and store.active.records:
                await _in_thread(store._close_active)
            if store.closed:
                return store.closed.popleft()
            # Nothing of this process's is spooled, and the table answers: back to it.
            store.spooling = False
            store.database_error = None
            store.logger.warning(
                "login log: %s takes records again; the spool is forwarded (%d records so "
                "far), new records go to the table",
                store.inner.description,
                store.forwarded,
            )
        return None

    def _adopt(self) -> list[Segment]:
        # In a thread: lock the files of processes that are gone.
        store = self.store
        held = {s.name for s in (*store.closed, store.active, *self.held()) if s is not None}
        found = []
        for name in store.directory.leftovers():
            store.directory.adopt(name)  # removed if its creator is gone
        for name in store.directory.segment_names():
            if name in held:
                continue
            fd = store.directory.adopt(name)
            if fd is None:
                continue
            try:
                data = _read(fd)
            except OSError as exc:  # the others are adopted still; this one is tried again
                os.close(fd)
                self._failed(exc)
                continue
            count, first = frames.summary(data)
            found.append(Segment(name, fd, len(data), False, count, first))
            store.logger.warning(
                "login log: adopted the spool file %s (%d records) of a process that is gone",
                name,
                count,
            )
        return found

    async def _table_ready(self) -> bool:
        store = self.store
        if self._opened:
            return True
        try:
            await store.forwarding.open()
        except DatabaseError as exc:
            if exc.lasting:
                self._table_unusable(exc)
            store.database_error = exc.strerror
            return False
        store.table_error = None
        self._opened = True
        return True

    async def _forward(self, segment: Segment) -> None:
        store = self.store
        # In a thread: a 4 MiB file takes the event loop ~100 ms to scan.
        host = store.directory.binding["host"]
        scan = await _in_thread(lambda: frames.scan(_read(segment.fd), host))
        theirs = frames.spooled_for(scan.header)
        if theirs != store.directory.binding:
            await self._set_aside(segment, theirs)
            return
        for offset, piece in scan.damaged:
            path = await _in_thread(
                lambda offset=offset, piece=piece: store.directory.move_aside(
                    segment.name, offset, piece
                )
            )
            store.moved_aside += 1
            store.moved_aside_bytes += len(piece)
            store.logger.error(
                "login log: %d unreadable bytes at offset %d of the spool file %s, moved "
                "aside to %s; the records after them are forwarded",
                len(piece),
                offset,
                segment.name,
                path,
            )
        if scan.torn:
            store.torn += 1
            store.logger.warning(
                "login log: the spool file %s ends in a record a crash cut short (%d bytes, "
                "never acknowledged): dropped",
                segment.name,
                scan.torn,
            )
        spooled = scan.records
        segment.records = len(spooled)
        if segment.first_time is None and spooled:
            segment.first_time = spooled[0].record.time
        start = segment.forwarded  # after a failure, those before are in the table
        while start < len(spooled):
            stop = start + 1
            while stop < len(spooled) and stop - start < BATCH:
                if (spooled[stop].host, spooled[stop].stream) != (
                    spooled[start].host,
                    spooled[start].stream,
                ):
                    break
                stop += 1
            await self._insert(spooled[start:stop], exact=segment.exact)
            segment.forwarded = stop
            start = stop
        await self._remove(segment)

    async def _remove(self, segment: Segment) -> None:
        # The fd is the removal's from now on (it closes it), even if this task is
        # cancelled meanwhile: stop() must not close it again.
        fd, segment.fd = segment.fd, -1
        await _in_thread(lambda: self.store.directory.remove(segment.name, fd))

    async def _set_aside(self, segment: Segment, theirs: dict[str, Any] | None) -> None:
        # A file spooled for another table, or whose header is unreadable, goes
        # whole to damaged/: its records are kept, never forwarded into this table.
        store = self.store
        data = await _in_thread(lambda: _read(segment.fd))
        path = await _in_thread(lambda: store.directory.move_aside(segment.name, 0, data))
        store.moved_aside += 1
        store.moved_aside_bytes += len(data)
        why = (
            "its header is unreadable"
            if theirs is None
            else f"it was spooled for {files.describe(theirs)}"
        )
        store.logger.error(
            "login log: the spool file %s is not forwarded, %s: moved aside whole to %s",
            segment.name,
            why,
            path,
        )
        await self._remove(segment)

    async def _insert(self, spooled: list[frames.Spooled], *, exact: bool) -> None:
        store = self.store
        records = [item.record for item in spooled]
        ids = [item.id for item in spooled]
        maybe = [item.maybe_stored or not exact for item in spooled]
        first = spooled[0]
        positions = None if first.stream is None else [item.position for item in spooled]
        batch = store.forwarding.restore(
            records, ids, first.host, maybe, stream=first.stream, positions=positions
        )
        delay = RETRY_FIRST
        while True:
            try:
                set_aside = await store.forwarding.write(batch)
                break
            except DatabaseError as exc:
                if exc.lasting:
                    self._table_unusable(exc)
                store.database_error = describe_error(exc)
            except Exception as exc:
                store.database_error = describe_error(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
        store.table_error = None
        if set_aside:
            await self._reject(set_aside, spooled)
        store.forwarded += len(records) - len(set_aside)

    async def _reject(self, set_aside: Any, spooled: list[frames.Spooled]) -> None:
        store = self.store
        gone = {id(record) for record in set_aside}
        rejected = [item for item in spooled if id(item.record) in gone]
        entries = [
            {
                "id": str(item.id),
                "username": item.record.username,
                "time": item.record.time.isoformat(),
                "ip": item.record.ip,
                "host": item.host,
            }
            for item in rejected
        ]
        path = await _in_thread(lambda: store.directory.reject(entries))
        store.rejected += len(entries)
        lines = text_lines([item.record for item in rejected]).decode().split("\n")[:-1]
        for entry, line in zip(entries, lines, strict=True):
            store.logger.error(
                "login log: the table refuses for good a record acknowledged while the "
                "database was away; kept in %s: id %s: %s",
                path,
                entry["id"],
                line,
            )

    def _table_unusable(self, exc: DatabaseError) -> None:
        store = self.store
        if store.table_error is None:
            store.logger.error(
                "login log: %s; the spooled records stay in the spool until it is fixed", exc
            )
        store.table_error = f"the table cannot take the spooled records: {exc.strerror}"

    def _failed(self, exc: Exception) -> None:
        store = self.store
        store.forward_error = f"spooled records cannot be forwarded ({describe_error(exc)})"
        cause = one_line(f"{type(exc).__name__}: {exc}")
        if cause != self._logged:
            self._logged = cause
            store.logger.error(
                "login log: forwarding the spool failed (%s); retrying",
                cause,
                exc_info=not isinstance(exc, OSError),
            )

    def _fine(self) -> None:
        if self._logged is not None:
            self._logged = None
            self.store.logger.warning("login log: forwarding the spool works again")
        self.store.forward_error = None


def _read(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
