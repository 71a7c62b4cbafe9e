"""The signing key file (``LOGIN_LOG_SEAL_KEY``): checked at start, and replaced each epoch.

The file holds the current signing key, one line in the form
``quart-app-log keygen`` writes; once it has signed, a second line
``seals LOG`` names the log it seals, so that it is never taken for a
new key (its first public half, which verifiers hold, signs nothing more).
A key change is crash-safe in three steps:

1. the new key is written to ``KEY.next`` (mode 0600) and synced, with its directory;
2. the old key signs the change into the sidecar (a ``K`` record), synced;
3. ``KEY.next`` is renamed over ``KEY`` (the old key's name is gone), and the
   directory synced.

A crash before step 2 leaves ``KEY`` current: the next start removes
``KEY.next``. A crash after it leaves the sidecar naming ``KEY.next``'s key:
the next start finishes step 3 (:func:`recover`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from .note import NoteError, Signer


class KeyFileError(OSError):
    """The signing key file cannot be used; ``str()`` says why, naming the file."""

    def __str__(self) -> str:
        return f"cannot seal the login log with the key {self.filename!r}: {self.strerror}"


def next_path(path: str) -> str:
    """Where a key change writes the new key before it is certified."""
    return f"{path}.next"


def load(path: str) -> Signer:
    """The key at ``path``, refused (:class:`KeyFileError`) when missing, unreadable, not
    a key, open to group or others, or in a directory the app cannot write (it changes
    the key there each epoch)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise _error(
            errno.ENOENT, "it does not exist (make one: quart-app-log keygen)", path
        ) from None
    except OSError as exc:
        reason = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise _error(exc.errno, f"it cannot be read: {reason}", path) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _error(errno.EINVAL, "it is not a regular file", path)
        if info.st_mode & 0o077:
            raise _error(
                errno.EPERM,
                f"its mode is {stat.S_IMODE(info.st_mode):04o}: group or others can reach "
                "it, and whoever reads it can sign seals (chmod 600 it)",
                path,
            )
        text = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        signer = Signer.parse(text.decode("utf-8").split("\n", 1)[0])
    except (UnicodeDecodeError, NoteError) as exc:
        raise _error(
            errno.EINVAL, f"it is not a signing key from quart-app-log keygen ({exc})", path
        ) from None
    directory = os.path.dirname(os.path.abspath(path))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise _error(
            errno.EACCES,
            f"its directory {directory!r} is not writable: the key is replaced there each epoch",
            path,
        )
    return signer


def sealed_log(path: str) -> str | None:
    """The log the key at ``path`` seals (its ``seals`` line), ``None`` for a new key."""
    try:
        with open(path, "rb") as file:
            lines = file.read(8192).decode("utf-8", "replace").split("\n")
    except OSError:
        return None
    return next((line[6:] for line in lines[1:] if line.startswith("seals ")), None)


def mark_sealing(path: str, target: str) -> None:
    """Add ``seals TARGET`` to the key at ``path`` (a table's key never changes): no log nor
    other table may take it for a new key. Crash-safe: a copy, synced, renamed over it."""
    with open(path, "rb") as file:
        first = file.read(4096).split(b"\n", 1)[0]
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, first + f"\nseals {target}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    _sync_directory(path)


def write_next(path: str, signer: Signer, log_path: str) -> None:
    """Step 1 of a key change: ``signer`` to ``KEY.next``, synced with its directory."""
    target = next_path(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)  # a change a crash interrupted before it was certified
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{signer.encoded()}\nseals {os.path.abspath(log_path)}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    _sync_directory(path)


def commit_next(path: str) -> None:
    """Step 3: ``KEY.next`` replaces ``KEY``; the old key's name is gone."""
    os.replace(next_path(path), path)
    _sync_directory(path)


def recover(path: str, certified: str | None) -> Signer:
    """The current key after a change a crash may have interrupted.

    ``certified`` is the verifier key the sidecar's last key change names
    (``None``: none). ``KEY.next`` holding that key is committed; any other
    ``KEY.next`` is removed, never certified.
    """
    pending = next_path(path)
    try:
        with open(pending, encoding="utf-8") as file:
            candidate = Signer.parse(file.read().split("\n", 1)[0])
    except FileNotFoundError:
        return load(path)
    except (OSError, UnicodeDecodeError, NoteError):
        candidate = None
    if candidate is not None and candidate.verifier.encoded() == certified:
        commit_next(path)
    else:
        os.unlink(pending)
    return load(path)


def _sync_directory(path: str) -> None:
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _error(number: int, reason: str, path: str) -> KeyFileError:
    return KeyFileError(number, reason, path)
