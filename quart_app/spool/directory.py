"""The spool directory: its checks, its binding to one table, its files, locks and size.

Files in it:

* ``spool.json``: the database, table and host the directory is bound to.
  Every process using the directory holds a shared ``flock`` on it; binding
  the directory anew takes the lock exclusively, so it is impossible while
  another app uses it.
* ``.lock``: held exclusively while the size is checked and a record appended,
  so that all workers together stay within ``LOGIN_LOG_SPOOL_MAX_BYTES``.
* ``*.seg``: the spool files. Each is created under a temporary name
  (``.new-*``), locked with ``flock``, then renamed: no other process sees it
  unlocked while its writer lives, and the lock of a dead process is gone, so
  a file that can be locked is adopted.
* ``damaged/``: unreadable pieces of spool files, kept; ``rejected.jsonl``:
  records the table refused for good after they were acknowledged. Neither
  is ever deleted by the app, and neither counts toward the size.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from .frames import MAX_PAYLOAD, first_header, header_frame, spooled_for

SUFFIX = ".seg"
NEW_PREFIX = ".new-"
BINDING = "spool.json"
REJECTED = "rejected.jsonl"
DAMAGED = "damaged"
BIND_WAIT = 10.0
"""Seconds a start waits for another process binding the directory."""
_NO_WAIT = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK  # no link followed, no FIFO waited on
_IN_USE: set[str] = set()  # directories opened in this process: one app each


class SpoolDirError(OSError):
    """The spool directory cannot be used.

    ``strerror`` says why without the path (it may be shown by ``/healthz``);
    ``str()`` names the path, for the operator's log.
    """

    def __str__(self) -> str:
        return f"cannot use the spool directory {self.filename}: {self.strerror}"


def _datasync(fd: int) -> None:
    getattr(os, "fdatasync", os.fsync)(fd)


def filesystem_type(path: str) -> str:
    """The type of the file system ``path`` is on (``ext4``, ``tmpfs``), from mountinfo."""
    best, kind = "", ""
    with suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        for line in mounts:
            fields, _, rest = line.partition(" - ")
            point = fields.split()[4].encode().decode("unicode_escape")
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, rest.split()[0]
    return kind


class SpoolDirectory:
    """One app's view of a spool directory: bound to ``binding``, at most ``max_bytes``."""

    def __init__(self, path: str, binding: dict[str, str], max_bytes: int) -> None:
        self.path = path
        self.binding = binding
        self.max_bytes = max_bytes
        self._bound_fd = -1
        self._lock_fd = -1
        self._real = ""

    def open(self) -> list[str]:
        """Check the directory and bind it; return warnings. Raises :class:`SpoolDirError`."""
        real = os.path.realpath(self.path)
        if real != os.path.abspath(self.path):
            self._refuse(errno.ELOOP, "its path goes through a symbolic link; give the real path")
        try:
            info = os.stat(real)
        except OSError as exc:
            self._refuse(exc.errno or errno.EIO, f"{exc.strerror}: create it (mode 0700) first")
        if not stat.S_ISDIR(info.st_mode):
            self._refuse(errno.ENOTDIR, "it is not a directory")
        if not os.access(real, os.W_OK | os.X_OK):
            self._refuse(errno.EACCES, "this process may not create files in it")
        if real in _IN_USE:
            self._refuse(errno.EBUSY, "another app of this process uses it")
        self._real = real
        try:
            self._lock_fd = self._open_file(".lock")
            self._bind()
            self._make_damaged()
        except SpoolDirError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            self._refuse(exc.errno or errno.EIO, exc.strerror or str(exc))
        _IN_USE.add(real)
        if filesystem_type(real) in ("tmpfs", "ramfs"):
            return [
                f"the spool directory {self.path} is on tmpfs: what it holds does not survive "
                "a reboot (a power cut loses the logins waiting there)"
            ]
        return []

    def close(self) -> None:
        """Release the directory (its locks)."""
        for fd in (self._bound_fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._bound_fd = self._lock_fd = -1
        _IN_USE.discard(self._real)

    def _refuse(self, code: int, reason: str) -> None:
        raise SpoolDirError(code, reason, self.path)

    def _open_file(self, name: str) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        return os.open(os.path.join(self._real, name), flags, 0o600)

    def _make_damaged(self) -> None:
        path = os.path.join(self._real, DAMAGED)
        with suppress(FileExistsError):
            os.mkdir(path, 0o700)
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            self._refuse(
                errno.ENOTDIR,
                f"{DAMAGED} is not a directory: it must be one, for the pieces of damaged "
                "spool files",
            )

    def _bind(self) -> None:
        self._bound_fd = fd = self._open_file(BINDING)
        deadline = time.monotonic() + BIND_WAIT
        while True:
            if _try_lock(fd, fcntl.LOCK_SH):
                found = _read_binding(fd)
                if found == self.binding:
                    return  # held shared for the app's life
                fcntl.flock(fd, fcntl.LOCK_UN)
            if _try_lock(fd, fcntl.LOCK_EX):
                found = _read_binding(fd)
                other = self._spooled_elsewhere(found) if found != self.binding else None
                if other is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    self._refuse(
                        errno.EBUSY,
                        f"it holds records spooled for {describe(other)}, not for "
                        f"{describe(self.binding)}: start with that configuration until they "
                        "are forwarded, or move them away",
                    )
                if found != self.binding:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, json.dumps(self.binding, sort_keys=True).encode() + b"\n", 0)
                    os.fsync(fd)
                    self.sync()
                fcntl.flock(fd, fcntl.LOCK_SH)  # not atomic; another binder rereads it
                continue
            found = _read_binding(fd)
            if time.monotonic() > deadline:
                whom = describe(found) if found else "another app"
                self._refuse(errno.EBUSY, f"another app uses it, spooling for {whom}")
            time.sleep(0.02 + secrets.randbelow(30) / 1000)

    def _spooled_elsewhere(self, found: dict[str, str] | None) -> dict[str, Any] | None:
        # What the files waiting here were spooled for, if not for this binding: the
        # binding file names it, or, lost or damaged, the files' own headers do.
        names = self.segment_names()
        if not names:
            return None
        if found is not None:
            return found
        for name in names:
            theirs = spooled_for(self.header_of(name))
            if theirs is not None and theirs != self.binding:
                return theirs
        return None

    def header_of(self, name: str) -> dict[str, Any] | None:
        """The header spool file ``name`` starts with; None if unreadable."""
        try:
            fd = os.open(os.path.join(self._real, name), os.O_RDONLY | _NO_WAIT)
        except OSError:
            return None
        try:
            return first_header(os.pread(fd, 12 + MAX_PAYLOAD, 0))
        except OSError:
            return None
        finally:
            os.close(fd)

    def segment_names(self) -> list[str]:
        """The spool files there, oldest first (their names start with their creation time).

        Only regular files: a directory or a link named like one is not a spool file.
        """
        with os.scandir(self._real) as entries:
            return sorted(
                entry.name
                for entry in entries
                if entry.name.endswith(SUFFIX) and entry.is_file(follow_symlinks=False)
            )

    def used_bytes(self) -> int:
        """What the spool files hold, those being created included."""
        total = 0
        with os.scandir(self._real) as entries:
            for entry in entries:
                if entry.name.endswith(SUFFIX) or entry.name.startswith(NEW_PREFIX):
                    with suppress(FileNotFoundError):
                        total += entry.stat(follow_symlinks=False).st_size
        return total

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's size lock: no other process appends meanwhile."""
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def sync(self, path: str = "") -> None:
        """Make the directory's entries (a new, renamed or removed file) durable; or ``path``'s."""
        fd = os.open(path or self._real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def create(self, prefix: str) -> tuple[str, int, int]:
        """A new spool file, locked before it is visible, with its header; ``(name, fd, size)``.

        ``prefix`` starts the name (the creation time, then the process's).
        """
        while True:
            temporary = os.path.join(self._real, f"{NEW_PREFIX}{secrets.token_hex(8)}")
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            fd = os.open(temporary, flags | os.O_NOFOLLOW, 0o600)
            if _try_lock(fd, fcntl.LOCK_EX) and os.fstat(fd).st_nlink:
                break
            # Another process took it for a dead one's, between the open and the lock
            # (and may have removed it already).
            os.close(fd)
        try:
            header = header_frame(self.binding)
            _write_all(fd, header)
            name = f"{prefix}{SUFFIX}"
            os.rename(temporary, os.path.join(self._real, name))
            self.sync()
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary)
            os.close(fd)
            raise
        return name, fd, len(header)

    def adopt(self, name: str) -> int | None:
        """Lock spool file ``name`` if no live process holds it; its fd, or None."""
        path = os.path.join(self._real, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | _NO_WAIT)
        except OSError:  # gone since listed, or not a file (a link, a directory)
            return None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not _try_lock(fd, fcntl.LOCK_EX):
            os.close(fd)  # not a spool file (a FIFO), or a live process's
            return None
        if os.fstat(fd).st_nlink == 0:
            os.close(fd)  # forwarded and removed since listed
            return None
        if name.startswith(NEW_PREFIX):  # a dead process's, never made visible: empty
            os.unlink(path)
            os.close(fd)
            return None
        return fd

    def remove(self, name: str, fd: int) -> None:
        """Delete spool file ``name``, forwarded (its lock is held), and close ``fd``.

        ``fd`` is closed whatever happens. A removal a crash undoes is safe: the
        file is adopted again and its records, found in the table, are not resent.
        """
        try:
            with suppress(FileNotFoundError):
                os.unlink(os.path.join(self._real, name))
        finally:
            os.close(fd)
        with suppress(OSError):
            self.sync()

    def leftovers(self) -> list[str]:
        """Files a dead process may have left being created, to :meth:`adopt` (and remove)."""
        return [name for name in os.listdir(self._real) if name.startswith(NEW_PREFIX)]

    def move_aside(self, name: str, offset: int, data: bytes) -> str:
        """Keep an unreadable piece of spool file ``name`` in ``damaged/``; its path."""
        path = os.path.join(self._real, DAMAGED, f"{name}.{offset}")
        fd = _open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.sync(os.path.join(self._real, DAMAGED))  # before the spool file goes
        return path

    def reject(self, entries: list[dict[str, Any]]) -> str:
        """Append records the table refused for good to ``rejected.jsonl``, durably; its path."""
        path = os.path.join(self._real, REJECTED)
        lines = "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
        fd = _open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            _write_all(fd, lines.encode("utf-8", "surrogatepass"))
            os.fsync(fd)
        finally:
            os.close(fd)
        self.sync()  # the file may be new: before the spool file goes
        return path


def _open_regular(path: str, flags: int) -> int:
    # Never waits on a FIFO put in its place, nor follows a link: refused, saying so.
    fd = os.open(path, flags | _NO_WAIT, 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return fd


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_binding(fd: int) -> dict[str, str] | None:
    text = os.pread(fd, 65536, 0)
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def describe(binding: dict[str, Any]) -> str:
    """The table, database and host a binding names, for messages."""
    settings = f", with {binding['settings']}" if binding.get("settings") else ""
    return (
        f"the table {binding.get('table')} at {binding.get('database')}{settings} "
        f"(host {binding.get('host')!r})"
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append(fd: int, size: int, data: bytes) -> None:
    """Append ``data`` to the spool file ``fd`` of ``size`` bytes, all of it or nothing.

    A write that fails part-way (a full disk) is cut back, so that a retry
    appends the same records once.
    """
    try:
        _write_all(fd, data)
    except OSError:
        with suppress(OSError):
            os.ftruncate(fd, size)
        raise


def datasync(fd: int) -> None:
    """Make what was appended to ``fd`` durable."""
    _datasync(fd)
