"""Where formatted records end up: an append-only file today.

The writer only knows the :class:`RecordStore` protocol, so keeping records in
another system later means a new store, not a new writer, route or receiver.
"""

from __future__ import annotations

import os
from typing import Protocol

from aiofiles.os import wrap as _in_thread


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


def _open_append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


def _is_same_file(path: str, fd: int) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


class FileStore:
    """Appends to one file, opened ``O_APPEND``, with one ``write(2)`` per batch.

    A single ``write(2)`` of the whole batch means processes appending to the
    same file never tear each other's lines. Before each batch it checks that
    the path still names the open file and reopens it when it was rotated away
    (renamed or removed).

    All file I/O runs in aiofiles' thread pool (``aiofiles.os.wrap``), never on
    the event loop. The check, any reopening and the write go to the thread as
    one call: on the benchmark machine every round trip to the thread cost the
    loop more than the work it carried, so a batch makes one, not three.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"file {path!r}"
        self._fd: int | None = None

    async def open(self) -> None:
        """Open the file for appending, failing with a message naming the path."""
        try:
            self._fd = await _in_thread(_open_append)(self.path)
        except OSError as exc:
            raise LogPathError(
                f"cannot open the login log {self.path!r} for appending: {exc.strerror or exc}"
            ) from exc

    async def append(self, data: memoryview) -> int:
        """Write ``data`` in one ``write(2)``, reopening the path first if it was rotated."""
        written = await _in_thread(self._append)(data)
        if not written:
            raise OSError(f"write to {self.path!r} wrote nothing")
        return written

    def _append(self, data: memoryview) -> int:
        # In the thread. Only the writer task calls append, one call at a time.
        if self._fd is None or not _is_same_file(self.path, self._fd):
            if self._fd is not None:
                fd, self._fd = self._fd, None
                os.close(fd)
            self._fd = _open_append(self.path)
        return os.write(self._fd, data)

    async def sync(self) -> None:
        """``fsync`` the file."""
        if self._fd is not None:
            await _in_thread(os.fsync)(self._fd)

    async def close(self) -> None:
        """Close the file if it is open."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            await _in_thread(os.close)(fd)
