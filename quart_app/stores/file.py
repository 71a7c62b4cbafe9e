"""The file store: whole lines appended in aiofiles' thread pool, never torn or interleaved.

Lines are formatted in the writing thread, not on the event loop. The file is
never reached through a symbolic link, and a file the store creates gets
exactly the configured mode.

Several processes (hypercorn's ``-w N``) may append to one file. To a regular
file each batch is appended under an exclusive lock on a lock file beside the
log (``.NAME.lock``, mode 0600, so that no reader of the log can take it), and
what the batch depends on is checked once the lock is held, since another
process may change it while this one waits:

* that the lock file is still the one at its path (a cleaner may remove it);
* that the path still names the open file: the store reopens the path when
  the file was rotated away (renamed or removed);
* that the file ends in a newline. A line left torn (a process killed, or a
  power cut, in the middle of ``write(2)``) is ended with :data:`CUT_SHORT`
  first, so that it never reads as a login, whatever it was cut in (an IP
  address cut short can be another valid one). A file rotated away gets the
  same.

A batch is one ``O_APPEND`` ``write(2)``. When the disk fills, or any write
fails, part-way through a line, the file is cut back to the end of the
batch's last whole line before the lock is released, and the writer's retry
goes on from there: a full disk leaves no half line behind, in the log or in
a file rotated away meanwhile. A torn line is left only by a write
interrupted for good (or a cut-back that fails too), and is ended as above by
the next batch of any process, or at the next start.

To a FIFO or other device, writes are cut at line ends into pieces of at most
``PIPE_BUF`` bytes, which a pipe never interleaves; no lock is taken.

A :data:`Framer` given to the store (``framer=``) may change what a batch
appends, to frame or seal the exact bytes written: it is called in the
writing thread with the lock held, once the checks above are done, with the
batch's lines and the file's :class:`FileState`, and what it returns is
appended instead. Without one, the lines are appended as they are.

An :data:`Appended` hook (``appended=``) is told, in the writing thread with
the lock still held, what was appended and where it began: to record the
exact bytes written (sealing hashes them). It is also called at :meth:`open`,
with nothing appended, once a torn line is ended; and a file rotated away is
synced before the store leaves it, so that what the hook recorded of it is on
disk.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from aiofiles.os import wrap as _in_thread

from ..config import Settings
from ..records import FORMATTERS, LoginRecord, text_lines

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


@dataclass(frozen=True, slots=True)
class FileState:
    """The log file as an append finds it, with the lock held: what a :data:`Framer` is given.

    ``size`` is where the bytes the framer returns will start: the file's
    length, a torn line already ended. ``identity`` is the file's
    ``(st_dev, st_ino)``, which changes when the log was rotated and a new
    file begun. Other processes may have appended since this one last did:
    :meth:`read` reads what is there.
    """

    path: str
    identity: tuple[int, int]
    size: int
    _reader: int = field(repr=False)

    def read(self, offset: int, count: int) -> bytes:
        """Up to ``count`` bytes of the file from ``offset``; only during the framer's call."""
        return os.pread(self._reader, count, offset)


Appended = Callable[[bytes, FileState], None]
"""``appended(data, state)``: ``data`` (whole lines) was just appended at ``state.size``.

Called with the lock held, in the writing thread; ``data`` is empty at
:meth:`FileStore.open`. Lines of a batch whose first attempt failed part-way
are not reported: the hook sees a gap between what it recorded and
``state.size``, and reads what is there with :meth:`FileState.read`.
"""

Framer = Callable[[bytes, FileState], bytes]
"""What a batch appends: ``framer(lines, state)`` returns the bytes written in place of ``lines``.

``lines`` are the batch's records formatted, exactly as they would be
appended; the result must be whole lines too (empty, or ending in a
newline), or the batch fails with ``ValueError``. It runs in the writing
thread with the lock held, so no process that takes the lock appends between
what the framer saw and what it returns. It is called whenever the batch is
about to be appended with nothing of it in the file: once, usually, and
again after an append that failed before any whole line of it stayed
(``state`` then tells what the file holds now). After a failure part-way,
the retry appends the rest of what it returned, as it returned it, though
other processes may have appended in between. A framed log must be a
regular file.
"""


@dataclass(slots=True)
class _Batch:
    records: list[LoginRecord]
    data: bytes | None = None  # what is appended: the lines, or what the framer made of them
    offset: int = 0  # bytes already written, up to a line's end: a retry goes on from here
    lines: bytes | None = None  # formatted by the first attempt


class FileStore:
    """Appends lines to one file (see the module docstring).

    Only the writer task calls :meth:`write` and :meth:`sync`, one call at a
    time, so the descriptors need no lock of their own. With ``durable`` the
    log must be a regular file, and a file rotated away with lines not yet
    synced is synced by the next :meth:`sync` before it is closed. With a
    ``framer``, each batch appends what it returns (see :data:`Framer`).
    """

    kind = "file"

    def __init__(
        self,
        path: str,
        *,
        formatter: Callable[[Iterable[LoginRecord]], bytes] = text_lines,
        mode: int = 0o640,
        durable: bool = False,
        framer: Framer | None = None,
        appended: Appended | None = None,
    ) -> None:
        self.path = path
        self.description = f"file {path!r}"
        self.formatter = formatter
        self.mode = mode
        self.durable = durable
        self.framer = framer
        self.appended = appended
        directory, name = os.path.split(os.path.abspath(path))
        self.lock_path = os.path.join(directory, f".{name}.lock")
        self._fd: int | None = None
        self._identity = (0, 0)  # the open file's (st_dev, st_ino)
        self._reader: int | None = None  # the same regular file, to read its last byte
        self._regular = True
        self.lock = LockFile(self.lock_path, self.path)
        self._unsynced = False
        self._retired: list[int] = []  # rotated away, durable, waiting for their sync
        self._directory_unsynced = False

    async def open(self) -> None:
        """Open the file for appending, failing with :class:`LogPathError`.

        A torn last line is ended now, not at the first login, when the disk
        has room for it.
        """
        await _in_thread(self._start)()

    def prepare(self, records: list[LoginRecord]) -> _Batch:
        """Wrap ``records``; they are formatted in the writing thread."""
        return _Batch(records)

    async def write(self, batch: _Batch) -> Sequence[LoginRecord]:
        """Append ``batch``, reopening the path first if it was rotated.

        A write that fails part-way through a line cuts the file back to the
        batch's last whole line (should that fail too, the next batch ends the
        torn line with :data:`CUT_SHORT`); the same batch written again goes
        on from there.
        """
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

    def _start(self) -> None:
        self._open()
        if self._regular:
            try:
                with self.lock.held():
                    size = -1
                    with suppress(OSError):  # a full disk: the first batch ends it
                        size = self._end_torn_line()
                    if self.appended is not None and size >= 0:
                        self.appended(b"", self._state(size))
            except BaseException:
                self._close_all()  # the lock file cannot be used: nothing is kept open
                raise

    def _write(self, batch: _Batch) -> None:
        if batch.lines is None:
            batch.lines = batch.data = self.formatter(batch.records)
        if self._fd is None or not (self._regular or self._names_open_file()):
            self._reopen(batch)
        if self._regular:
            with self.lock.held():
                # Checked only now: while this process waited for the lock,
                # another may have rotated the log, or died mid-line.
                if not self._names_open_file():
                    # Best effort: the file rotated away is no longer ours to fail on.
                    with suppress(OSError):
                        self._end_torn_line()
                    if self.appended is not None and self._fd is not None:
                        _datasync(self._fd)  # what the hook recorded of it is on disk
                    self._reopen(batch)
                if self._regular:  # still: a FIFO may have taken the path's place
                    self._append(batch)
                    return
        self._write_all(batch, PIPE_BUF)

    def _reopen(self, batch: _Batch) -> None:
        assert batch.data is not None
        self._close()
        self._open()
        # A FIFO's reader that left mid-line: the next one gets that line whole.
        batch.offset = batch.data.rfind(b"\n", 0, batch.offset) + 1

    def _append(self, batch: _Batch) -> None:
        # With the lock held, to the regular file the path names.
        size = self._end_torn_line()
        if self.framer is not None and batch.offset == 0:
            # Nothing of the batch is in the file: framed for the file as it is now.
            batch.data = self._framed(batch, size)
        begin = batch.offset
        try:
            self._write_all(batch)
        except OSError:
            self._cut_back(batch, begin, size)
            raise
        if self.appended is not None:
            assert batch.data is not None
            self.appended(batch.data[begin:], self._state(size))

    def _state(self, size: int) -> FileState:
        assert self._reader is not None
        return FileState(self.path, self._identity, size, self._reader)

    def _framed(self, batch: _Batch, size: int) -> bytes:
        assert self.framer is not None and self._reader is not None and batch.lines is not None
        data = self.framer(batch.lines, self._state(size))
        if data and not data.endswith(b"\n"):
            # A torn line would be ended as cut short, and cut back on a failure.
            raise ValueError("the login log's framer must return whole lines, ending in a newline")
        return data

    def _cut_back(self, batch: _Batch, begin: int, size: int) -> None:
        # The write failed part-way through a line: cut the file back to the
        # end of this attempt's last whole line before the lock is let go, or
        # the next process would append to the half line, and a rotation
        # would keep it for ever.
        assert self._fd is not None and batch.data is not None
        end = batch.offset
        whole = max(begin, batch.data.rfind(b"\n", begin, end) + 1)
        if whole == end:
            return
        batch.offset = whole  # the retry writes the cut line again, whole
        # Only if no writer that takes no lock appended meanwhile. If this
        # fails too, the next batch finds the torn line and ends it.
        with suppress(OSError):
            if os.fstat(self._fd).st_size == size + end - begin:
                os.ftruncate(self._fd, size + whole - begin)

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
        return _names(self.path, self._identity)

    def _open(self) -> None:
        while True:
            fd, created = self._open_fd()
            try:
                os.set_blocking(fd, True)  # O_NONBLOCK only kept a FIFO's open from hanging
                opened = os.fstat(fd)
                regular = stat.S_ISREG(opened.st_mode)
                if self.durable and not regular:
                    raise LogPathError(
                        errno.EINVAL,
                        "durable mode needs a regular file, and this one cannot be fsynced",
                        self.path,
                    )
                if (self.framer is not None or self.appended is not None) and not regular:
                    raise LogPathError(
                        errno.EINVAL,
                        "a framed log needs a regular file: this one is appended to "
                        "without the lock and cannot be read back",
                        self.path,
                    )
                if created:
                    os.fchmod(fd, self.mode)  # exactly this mode, whatever the umask
                    self._directory_unsynced = True
                identity = (opened.st_dev, opened.st_ino)
                reader = self._open_reader(identity) if regular else None
            except BaseException:
                os.close(fd)
                raise
            if regular and reader is None:
                os.close(fd)  # the path changed between the two opens: again
                continue
            self._fd, self._identity, self._reader, self._regular = fd, identity, reader, regular
            return

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

    def _path_error(self, exc: OSError) -> LogPathError:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ELOOP:
            reason = "it is a symbolic link, and the login log is never written through one"
        elif exc.errno == errno.ENXIO:
            reason = "it is a FIFO that no process reads"
        return LogPathError(exc.errno, reason, self.path)

    def _open_reader(self, identity: tuple[int, int]) -> int | None:
        # The append descriptor cannot read; this one, checked to be the same
        # file, reads its last byte before each batch. None: not the same.
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            reader = os.open(self.path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._path_error(exc) from exc
        read = os.fstat(reader)
        if (read.st_dev, read.st_ino) == identity:
            return reader
        os.close(reader)
        return None

    def _end_torn_line(self) -> int:
        # With the lock held, so that processes end a line once (no empty
        # line) and none appends while it is looked at. Returns the size.
        assert self._reader is not None
        size = os.fstat(self._reader).st_size
        if size and os.pread(self._reader, 1, size - 1) != b"\n":
            # A marker itself cut short gets another after it next time.
            self._write_all(_Batch([], CUT_SHORT))
            size += len(CUT_SHORT)
        return size

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
        if self._reader is not None:
            reader, self._reader = self._reader, None
            os.close(reader)
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if self.durable and self._unsynced:
                self._retired.append(fd)  # synced, then closed, by the next sync
            else:
                os.close(fd)
            self._unsynced = False

    def _close_all(self) -> None:
        self._close()  # the file is retired at most: closed below, unsynced
        while self._retired:
            os.close(self._retired.pop())
        self.lock.close()


class LockFile:
    """An exclusive ``flock`` on a lock file, re-opened when the file at its path was
    removed or replaced (a cleaner may remove it): processes started since lock
    the new one.

    Each instance is one open file description: two in one process exclude
    each other as two processes do (one shared by two threads would not).
    """

    def __init__(self, path: str, log_path: str) -> None:
        self.path = path
        self.log_path = log_path
        self._fd: int | None = None
        self._identity = (0, 0)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock (blocking) for the ``with`` block; :class:`LogPathError` if the
        lock file cannot be opened."""
        while True:
            if self._fd is None:
                self._fd = self._open()
                locked = os.fstat(self._fd)
                self._identity = (locked.st_dev, locked.st_ino)
            fd = self._fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _names(self.path, self._identity):
                break
            self._fd = None
            os.close(fd)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock file (the lock, if held, goes with it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _open(self) -> int:
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            return os.open(self.path, flags, 0o600)
        except OSError as exc:
            reason = f"cannot open its lock file {self.path!r}: {exc.strerror or exc}"
            raise LogPathError(exc.errno, reason, self.log_path) from exc


def _names(path: str, identity: tuple[int, int]) -> bool:
    """Whether ``path`` names the file whose ``(st_dev, st_ino)`` is ``identity``."""
    # lstat, not stat: a symlink planted at the path is not our file.
    try:
        at_path = os.lstat(path)
    except FileNotFoundError:
        return False
    return (at_path.st_dev, at_path.st_ino) == identity


def from_settings(settings: Settings) -> FileStore:
    """The file at ``LOGIN_LOG_PATH``, in ``LOGIN_LOG_FORMAT``."""
    return FileStore(
        settings.login_log_path,
        formatter=FORMATTERS[settings.login_log_format],
        mode=settings.login_log_file_mode,
        durable=settings.login_log_durable,
    )
