"""The sealed table: the PostgreSQL store (spooled or not), its rows sealed by this process's
stream (:mod:`.stream`), its notes inserted into the checkpoints table and copied to stderr.

The PostgreSQL store calls :meth:`SealedTableStore.stamp` as it prepares a
batch (each row's leaf hashed, a position given, before the first attempt)
and :meth:`SealedTableStore.settled` once rows are committed or set aside,
whether by the writer or, for spooled rows, by the forwarder. Every
``interval`` the stream's notes due are signed, written to stderr
(``login-log-checkpoint BASE64``) and inserted on a connection of their own;
a database away keeps them queued, in order, and the next try sends them
(the key ``(stream, seq)`` makes a resend harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from ..config import Settings
from ..stores.base import RecordStore, WrappingStore
from ..stores.pg_table import insert_checkpoints_sql
from ..stores.postgres import PostgresStore
from ..threads import in_daemon_thread
from . import keys
from .merkle import leaf_hash
from .rows import leaf
from .sidecar import STDERR_PREFIX, one_line
from .stream import Note, Stream

if TYPE_CHECKING:
    from ..stores.postgres import _Batch

MAX_STREAM_NAME = 1000
"""The longest stream name (the key's name and 20 characters): a spool record carries it."""


class SealedTableStore(WrappingStore):
    """A PostgreSQL store, spooled or not, whose rows are sealed (see the module docstring).

    ``table``: the PostgreSQL store that prepares the batches;
    ``forwarding``: the spool's own store, if any (it commits spooled rows).
    """

    def __init__(
        self,
        inner: RecordStore,
        table: PostgresStore,
        key_path: str,
        *,
        forwarding: PostgresStore | None = None,
        interval: float = 1.0,
        epoch: float = 900.0,
        logger: logging.Logger | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        super().__init__(inner)
        self.table = table
        self.forwarding = forwarding
        self.key_path = key_path
        self.interval = interval
        self.epoch = epoch
        self.logger = logger or logging.getLogger("quart_app.seal")
        self.stderr = stderr
        self.stream: Stream | None = None
        self.queued: list[Note] = []  # signed, not yet in the checkpoints table
        self.failing: str | None = None
        self._sql = insert_checkpoints_sql(table.table)
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Check the key, start this process's stream, open the table (with its checkpoints
        table), and start signing."""
        target = f"postgresql://{self.table.url.where.partition('@')[2]}#{self.table.table}"
        host_key = await in_daemon_thread(lambda: _host_key(self.key_path, target))
        stream = Stream(host_key, epoch=self.epoch, now=time.monotonic())
        del host_key  # only the certificate needed it
        if len(stream.name.encode()) > MAX_STREAM_NAME:
            raise keys.KeyFileError(errno.EINVAL, "its name is too long", self.key_path)
        self.stream = stream
        self.table.sealing = self
        if self.forwarding is not None:
            self.forwarding.sealing = self
        await self.inner.open()
        self._queue(stream.notes(time.monotonic()))  # the certificate, first
        self._task = asyncio.create_task(self._seal_every(), name="login-log-sealer")

    def stamp(self, batch: _Batch) -> None:
        """Give ``batch`` this stream and the next positions (its rows' leaves hashed)."""
        stream = self.stream
        assert stream is not None
        host = batch.host
        hashes = [
            leaf_hash(leaf(id_, record, host))
            for id_, record in zip(batch.ids, batch.records, strict=True)
        ]
        first = stream.assign(hashes)
        batch.stream = stream.name
        batch.positions = list(range(first, first + len(hashes)))

    def settled(self, batch: _Batch, start: int, stop: int, *, set_aside: bool) -> None:
        """Rows of ``batch`` committed (or set aside): those of this stream may be sealed."""
        stream = self.stream
        if stream is not None and batch.stream == stream.name and batch.positions is not None:
            positions = batch.positions[start:stop]
            stream.settle((p for p in positions if p is not None), set_aside=set_aside)

    async def close(self) -> None:
        """Stop: the stream's last notes (a clean stop, if every row of it is settled: the
        writer has drained) go to stderr and, while the table's store closes, to the table."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.stream is None:
            await self.inner.close()
            return
        notes, left = self.stream.stop(time.monotonic())
        self._queue(notes)
        if left:
            self.logger.error(
                "login log: %d records of the stream %s are not in the table yet (in the "
                "spool, or not written): it ends without a clean stop, and its last rows "
                "stay unsealed",
                left,
                self.stream.name,
            )
        # Side by side: the writer gives the stores a second to close.
        try:
            await asyncio.gather(self.inner.close(), self._send())
        finally:
            self._drop_connection()
            if self.queued:
                self.logger.error(
                    "login log: the last %d checkpoint notes of the stream %s could not be "
                    "stored (%s); they are on stderr, a line each: give them to verify with "
                    "--checkpoint",
                    len(self.queued),
                    self.stream.name,
                    self.failing,
                )

    async def _seal_every(self) -> None:
        # Not in open(): a database that hangs would hold the start up.
        await self._send()
        while True:
            await asyncio.sleep(self.interval)
            await self.checkpoint()

    async def checkpoint(self) -> None:
        """Sign the notes due now (a checkpoint of the rows settled since the last), and store
        every note waiting; a failure keeps them for the next time."""
        assert self.stream is not None
        self._queue(self.stream.notes(time.monotonic()))
        await self._send()

    def _queue(self, notes: list[Note]) -> None:
        if not notes:
            return
        self.queued += notes
        out = self.stderr or sys.stderr
        with contextlib.suppress(OSError, ValueError):
            out.write("".join(f"{STDERR_PREFIX}{one_line(note.note)}\n" for note in notes))
            out.flush()

    async def _send(self) -> None:
        # The queued notes in one statement; kept for the next try if it fails.
        notes = self.queued
        if not notes:
            return
        columns = (
            [note.stream for note in notes],
            [note.seq for note in notes],
            [note.size for note in notes],
            [note.note for note in notes],
            [note.hashes for note in notes],
            [note.roots for note in notes],
        )
        try:
            if self._connection is None:
                self._connection = await self.table.connect_apart()
            async with asyncio.timeout(self.table.timeout):
                await self._connection.execute(self._sql, *columns)
        except Exception as exc:
            self._drop_connection()
            reason = f"{type(exc).__name__}: {exc}"
            if self.failing is None:
                self.logger.error(
                    "login log: cannot store checkpoints in %s (%s); kept, retried every %g s",
                    self.table.description,
                    reason,
                    self.interval,
                )
            self.failing = reason
            return
        del self.queued[: len(notes)]
        if self.failing is not None:
            self.logger.warning("login log: storing checkpoints works again")
        self.failing = None

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()


def _host_key(path: str, target: str) -> Any:
    signer = keys.load(path)
    sealed = keys.sealed_log(path)
    if sealed is None:
        keys.mark_sealing(path, target)
    elif sealed != target:
        raise keys.KeyFileError(
            errno.EINVAL,
            f"it seals {sealed} already: each log or table needs a key of its own "
            "(quart-app-log keygen)",
            path,
        )
    return signer


def from_settings(inner: RecordStore, settings: Settings) -> SealedTableStore:
    """Seal ``inner``, the PostgreSQL store or the spool around it, with ``LOGIN_LOG_SEAL_KEY``."""
    table = inner if isinstance(inner, PostgresStore) else getattr(inner, "inner", None)
    if not isinstance(table, PostgresStore):
        raise TypeError("only the PostgreSQL store, spooled or not, can be sealed as a table")
    return SealedTableStore(
        inner,
        table,
        settings.login_log_seal_key,
        forwarding=getattr(inner, "forwarding", None),
        interval=settings.login_log_seal_interval,
        epoch=settings.login_log_seal_epoch,
    )
