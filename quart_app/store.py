"""Where formatted records end up: an append-only file today.

The writer only knows the :class:`RecordStore` protocol, so keeping records in
another system later means a new store, not a new writer, route or receiver.
"""

from __future__ import annotations

import os
from typing import Protocol

import aiofiles
import aiofiles.os
from aiofiles.threadpool.binary import AsyncFileIO


class RecordStore(Protocol):
    """Something that keeps batches of formatted records, in order."""

    description: str

    async def open(self) -> None:
        """Get ready to store; raise ``OSError`` if that is impossible."""

    async def append(self, data: memoryview) -> int:
        """Store a prefix of ``data``; return its length (> 0) or raise ``OSError``."""

    async def sync(self) -> None:
        """Make everything appended so far durable."""

    async def close(self) -> None:
        """Release what :meth:`open` took."""


class LogPathError(RuntimeError):
    """The log file cannot be opened for appending."""


def _is_same_file(path: str, fd: int) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def _fsync(fd: int) -> None:
    os.fsync(fd)


# Both run in aiofiles' thread pool: stat and fsync may stall on a slow disk.
_is_same_file_async = aiofiles.os.wrap(_is_same_file)
_fsync_async = aiofiles.os.wrap(_fsync)


class FileStore:
    """Appends to one file, opened ``O_APPEND`` and unbuffered.

    Each :meth:`append` is one ``write(2)`` of the whole batch, so processes
    appending to the same file never tear each other's lines. Before each
    batch it checks that the path still names the open file and reopens it
    when it was rotated away (renamed or removed).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"file {path!r}"
        self._file: AsyncFileIO | None = None

    async def _open(self) -> None:
        # buffering=0: a raw FileIO, whose write() is exactly one write(2);
        # a buffered writer may split a large batch into several.
        self._file = await aiofiles.open(self.path, "ab", buffering=0)

    async def open(self) -> None:
        """Open the file for appending, failing with a message naming the path."""
        try:
            await self._open()
        except OSError as exc:
            raise LogPathError(
                f"cannot open the login log {self.path!r} for appending: {exc.strerror or exc}"
            ) from exc

    async def append(self, data: memoryview) -> int:
        """Write ``data`` in one ``write(2)``, reopening the path first if it was rotated."""
        if self._file is None or not await _is_same_file_async(self.path, self._file.fileno()):
            await self.close()
            await self._open()
        assert self._file is not None
        written = await self._file.write(data)
        if not written:
            raise OSError(f"write to {self.path!r} wrote nothing")
        return written

    async def sync(self) -> None:
        """``fsync`` the file."""
        if self._file is not None:
            await _fsync_async(self._file.fileno())

    async def close(self) -> None:
        """Close the file if it is open."""
        if self._file is not None:
            file, self._file = self._file, None
            await file.close()
