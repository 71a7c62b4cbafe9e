"""The sealed file store: the file store, its lines' hashes recorded as they are appended,
and a sealer signing checkpoints every interval (see docs/log-format.md)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..config import Settings
from ..stores.base import RecordStore, WrappingStore
from ..stores.file import FileStore, LogPathError
from ..threads import in_daemon_thread
from . import keys
from .leaves import LeafRecorder
from .sealer import Sealer
from .sidecar import sidecar_path

T = TypeVar("T")


def _in_thread(function: Callable[[], T]) -> Awaitable[T]:
    return in_daemon_thread(function, name="login-log-sealer")


class SealedStore(WrappingStore):
    """A :class:`~quart_app.stores.file.FileStore` whose lines are sealed.

    ``interval``: seconds between checkpoints while lines arrive; ``epoch``:
    seconds a signing key is used. The store refuses to open when the key
    cannot be used or the log is not a regular file.
    """

    def __init__(
        self,
        inner: FileStore,
        key_path: str,
        *,
        interval: float = 1.0,
        epoch: float = 900.0,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(inner)
        self.file = inner
        self.key_path = key_path
        self.interval = interval
        self.logger = logger or logging.getLogger("quart_app.seal")
        self.sealer = Sealer(inner.path, key_path, epoch=epoch, logger=self.logger)
        self.recorder: LeafRecorder | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Check the key and the log, open the file (its seals checked), start sealing."""
        name = await _in_thread(self._check)
        self.recorder = LeafRecorder(self.file.path, name, mode=self.file.mode, logger=self.logger)
        self.file.appended = self.recorder
        await self.file.open()
        try:
            await _in_thread(self.sealer.start)
            await _in_thread(self.sealer.tick)
        except BaseException:
            await self.file.close()
            await _in_thread(self.sealer.close)
            raise
        self._task = asyncio.create_task(self._seal_every(), name="login-log-sealer")

    async def close(self) -> None:
        """Close the file; the last process to stop signs everything and changes the key."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.file.close()
        if self.recorder is not None:
            self.recorder.close()
        await _in_thread(self.sealer.stop)

    def _check(self) -> str:
        signer = keys.load(self.key_path)
        sealed = keys.sealed_log(self.key_path)
        if sealed is not None and not os.path.exists(sidecar_path(self.file.path)):
            # Verifiers hold the first key's public half; this key could only start a
            # chain none of them can check.
            raise keys.KeyFileError(
                errno.EINVAL,
                f"it has sealed {sealed} already, and {sidecar_path(self.file.path)} does not "
                "exist: each log needs a key of its own (quart-app-log keygen)",
                self.key_path,
            )
        try:
            info = os.stat(self.file.path)
        except FileNotFoundError:
            return signer.name
        if not stat.S_ISREG(info.st_mode):
            raise LogPathError(
                errno.EINVAL,
                "a sealed log must be a regular file: a FIFO or device keeps nothing to verify",
                self.file.path,
            )
        return signer.name

    async def _seal_every(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.interval)
            try:
                await _in_thread(self.sealer.tick)
            except Exception as exc:
                if not failing:
                    self.logger.error(
                        "login log: sealing failed (%s); retrying",
                        exc,
                        exc_info=not isinstance(exc, OSError),
                    )
                failing = True
                continue
            if failing:
                self.logger.warning("login log: sealing works again")
            failing = False


def from_settings(inner: RecordStore, settings: Settings) -> RecordStore:
    """Seal ``inner`` with ``LOGIN_LOG_SEAL_KEY``: the file store's lines, or the PostgreSQL
    table's rows (:mod:`.table`)."""
    if not isinstance(inner, FileStore):
        from .table import from_settings as sealed_table

        return sealed_table(inner, settings)
    return SealedStore(
        inner,
        settings.login_log_seal_key,
        interval=settings.login_log_seal_interval,
        epoch=settings.login_log_seal_epoch,
    )
