"""The file store: whole lines appended in aiofiles' thread pool, never torn or interleaved.

Lines are formatted in the writing thread, not on the event loop. Before each
batch the store checks that the path still names its open file and reopens it
when it was rotated away (renamed or removed). The file is never reached
through a symbolic link, a file it creates gets exactly the configured mode,
and a file that ends in half a line (a disk that filled up during a stop) gets
that line ended with :data:`CUT_SHORT` before anything is added, so that it
never reads as a login, whatever it was cut in (an IP address cut short can be
another valid one).

Several processes (hypercorn's ``-w N``) may append to one file. To a regular
file each batch is one ``O_APPEND`` ``write(2)`` under an exclusive lock on a
lock file beside the log (``.NAME.lock``, mode 0600, so that no reader of the
log can take it): a disk that fills up in the middle of a batch leaves the
lock held until the batch is complete, so no other process appends after half
a line. To a FIFO or other device, writes are cut at line ends into pieces of
at most ``PIPE_BUF`` bytes, which a pipe never interleaves.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiofiles.os import wrap as _in_thread

from ..records import LoginRecord, text_lines

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
# fdatasync writes the data and the size, all a reader needs; where there is
# none, fsync.
_datasync = getattr(os, "fdatasync", os.fsync)
PIPE_BUF = getattr(select, "PIPE_BUF", 512)
CUT_SHORT = b" (cut short)\n"
"""What ends a line a write left torn. No line of either format ends so: ``parse_line``
refuses the line, whatever field it was cut in."""


class LogPathError(OSError):
    """The log path cannot be used.

    ``strerror`` says why without the path (it is shown by ``/healthz``);
    ``str()`` names the path, for the operator's log.
    """

    def __str__(self) -> str:
        return f"cannot open the login log {self.filename!r} for appending: {self.strerror}"


@dataclass(slots=True)
class _Batch:
    records: list[LoginRecord]
    data: bytes | None = None  # formatted by the first attempt
    offset: int = 0  # bytes already written: a retry goes on from here


class FileStore:
    """Appends lines to one file (see the module docstring).

    Only the writer task calls :meth:`write` and :meth:`sync`, one call at a
    time, so the descriptors need no lock of their own. With ``durable`` the
    log must be a regular file, and a file rotated away with lines not yet
    synced is synced by the next :meth:`sync` before it is closed.
    """

    kind = "file"

    def __init__(
        self,
        path: str,
        *,
        formatter: Callable[[Iterable[LoginRecord]], bytes] = text_lines,
        mode: int = 0o640,
        durable: bool = False,
    ) -> None:
        self.path = path
        self.description = f"file {path!r}"
        self.formatter = formatter
        self.mode = mode
        self.durable = durable
        directory, name = os.path.split(os.path.abspath(path))
        self.lock_path = os.path.join(directory, f".{name}.lock")
        self._fd: int | None = None
        self._regular = True
        self._lock_fd: int | None = None
        self._locked = False  # held between a write cut short and its completion
        self._unsynced = False
        self._retired: list[int] = []  # rotated away, durable, waiting for their sync
        self._directory_unsynced = False

    async def open(self) -> None:
        """Open the file for appending, failing with :class:`LogPathError`."""
        await _in_thread(self._open)()

    def prepare(self, records: list[LoginRecord]) -> _Batch:
        """Wrap ``records``; they are formatted in the writing thread."""
        return _Batch(records)

    async def write(self, batch: _Batch) -> Sequence[LoginRecord]:
        """Append ``batch``, reopening the path first if it was rotated."""
        # One trip to the thread for the check, any reopening and the write.
        await _in_thread(self._write)(batch)
        return ()

    async def sync(self) -> None:
        """``fdatasync`` the file (and any rotated away unsynced), and a new file's directory.

        After a failed sync Linux may report the next one as successful though
        the data was dropped ("fsyncgate"), so the file is reopened instead of
        synced again.
        """
        await _in_thread(self._sync)()

    async def close(self) -> None:
        """Close the file if it is open."""
        await _in_thread(self._close_all)()

    def _write(self, batch: _Batch) -> None:
        if batch.data is None:
            batch.data = self.formatter(batch.records)
        if self._fd is None or not self._names_open_file():
            self._close()
            self._open()
            # The part already written went to the file before: write the
            # line it cut short again, whole, rather than its tail alone.
            batch.offset = batch.data.rfind(b"\n", 0, batch.offset) + 1
        if self._regular:
            self._lock()
            try:
                self._write_all(batch)
            except OSError:
                if batch.offset and batch.data[batch.offset - 1] != ord("\n"):
                    raise  # half a line is out: keep the lock until the rest is
                self._unlock()
                raise
            self._unlock()
        else:
            self._write_all(batch, PIPE_BUF)

    def _write_all(self, batch: _Batch, piece: int | None = None) -> None:
        assert self._fd is not None and batch.data is not None
        data, view = batch.data, memoryview(batch.data)
        while batch.offset < len(view):
            end = len(view)
            if piece is not None and end - batch.offset > piece:
                # Whole lines of at most `piece` bytes (a longer line alone).
                end = data.rfind(b"\n", batch.offset, batch.offset + piece) + 1
                if end <= batch.offset:
                    end = data.index(b"\n", batch.offset) + 1
            try:
                written = os.write(self._fd, view[batch.offset : end])
            except BrokenPipeError:
                self._close()  # a FIFO's reader left: reopen when one is back
                raise
            if not written:
                raise OSError(errno.EIO, "write to the login log wrote nothing")
            batch.offset += written
            self._unsynced = True

    def _names_open_file(self) -> bool:
        # lstat, not stat: a symlink planted at the path is not our file.
        assert self._fd is not None
        try:
            at_path = os.lstat(self.path)
        except FileNotFoundError:
            return False
        opened = os.fstat(self._fd)
        return (at_path.st_dev, at_path.st_ino) == (opened.st_dev, opened.st_ino)

    def _open(self) -> None:
        fd, created = self._open_fd()
        try:
            os.set_blocking(fd, True)  # O_NONBLOCK only kept a FIFO's open from hanging
            self._regular = stat.S_ISREG(os.fstat(fd).st_mode)
            if self.durable and not self._regular:
                raise LogPathError(
                    errno.EINVAL,
                    "durable mode needs a regular file, and this one cannot be fsynced",
                    self.path,
                )
            if self._regular and self._lock_fd is None:
                self._lock_fd = self._open_lock_file()
            if created:
                os.fchmod(fd, self.mode)  # exactly this mode, whatever the umask
                self._directory_unsynced = True
            elif self._regular:
                self._end_torn_line(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _open_fd(self) -> tuple[int, bool]:
        while True:
            try:
                return os.open(self.path, _FLAGS | os.O_CREAT | os.O_EXCL, self.mode), True
            except FileExistsError:
                pass
            except OSError as exc:
                raise self._path_error(exc) from exc
            try:
                return os.open(self.path, _FLAGS), False
            except FileNotFoundError:
                continue  # removed in between: create it
            except OSError as exc:
                raise self._path_error(exc) from exc

    def _open_lock_file(self) -> int:
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            return os.open(self.lock_path, flags, 0o600)
        except OSError as exc:
            reason = f"cannot open its lock file {self.lock_path!r}: {exc.strerror or exc}"
            raise LogPathError(exc.errno, reason, self.path) from exc

    def _path_error(self, exc: OSError) -> LogPathError:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ELOOP:
            reason = "it is a symbolic link, and the login log is never written through one"
        elif exc.errno == errno.ENXIO:
            reason = "it is a FIFO that no process reads"
        return LogPathError(exc.errno, reason, self.path)

    def _lock(self) -> None:
        if not self._locked:
            assert self._lock_fd is not None
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._locked = True

    def _unlock(self) -> None:
        if self._locked:
            assert self._lock_fd is not None
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            self._locked = False

    def _end_torn_line(self, fd: int) -> None:
        # Under the lock, so that processes opening at once end the line once
        # (no empty line), and none appends while it is looked at.
        held = self._locked
        self._lock()
        try:
            last = self._last_byte(fd)
            if last not in (None, b"\n"):
                os.write(fd, CUT_SHORT)
        finally:
            if not held:
                self._unlock()

    def _last_byte(self, fd: int) -> bytes | None:
        # The append descriptor cannot read; a second one, checked to be the
        # same file, can.
        reader = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            opened, read = os.fstat(fd), os.fstat(reader)
            if (opened.st_dev, opened.st_ino) != (read.st_dev, read.st_ino) or not read.st_size:
                return None
            return os.pread(reader, 1, read.st_size - 1)
        finally:
            os.close(reader)

    def _sync(self) -> None:
        try:
            while self._retired:
                _datasync(self._retired[0])
                os.close(self._retired.pop(0))
            if self._fd is not None and self._unsynced:
                _datasync(self._fd)
                self._unsynced = False
            if self._directory_unsynced:
                directory = os.open(
                    os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY | os.O_DIRECTORY
                )
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
                self._directory_unsynced = False
        except OSError:
            self._close_all()
            raise

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if self.durable and self._unsynced:
                self._retired.append(fd)  # synced, then closed, by the next sync
            else:
                os.close(fd)
            self._unsynced = False

    def _close_all(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        while self._retired:
            os.close(self._retired.pop())
        self._unsynced = False
        self._unlock()
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)
