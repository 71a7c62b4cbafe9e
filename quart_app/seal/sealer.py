"""The sealer: folds the leaf hashes the writers record and signs checkpoints, in one process.

Every process serving a sealed log follows the sidecar (:meth:`Sealer.tick`,
each ``interval`` seconds, in a thread), so that any of them can take over;
the one holding an exclusive lock on ``.LOG.sealer`` signs. Only it loads the
signing key, and it alone changes it: each ``epoch``, at a new tree, and at
the last process's clean stop (the processes hold ``.LOG.writers`` shared
while they run; the one that then gets it exclusively is the last).

Before a checkpoint is signed, the lines it covers are synced to disk. The
signed notes go to the sidecar and to stderr, one line each
(``login-log-checkpoint BASE64``), whatever the log level.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any, TextIO, TypeVar

from ..stores.file import LockFile
from . import keys
from .certs import Checkpoint, is_whole, records_digest
from .leaves import new_origin
from .merkle import CompactRange, fold_roots
from .note import NoteError, Signer
from .sidecar import (
    STDERR_PREFIX,
    Break,
    File,
    Leaves,
    Moved,
    Record,
    SidecarFile,
    Signed,
    Tree,
    last_line_starting,
    lines_from,
    one_line,
    parse,
    record_at,
    sidecar_path,
)

_datasync = getattr(os, "fdatasync", os.fsync)

F = TypeVar("F", bound=Callable[..., Any])


def _one_at_a_time(method: F) -> F:
    # A tick given up on (its thread stuck on a hung disk) may still run when
    # the next call comes: they take turns.
    @wraps(method)
    def locked(self: Sealer, *args: Any, **kwargs: Any) -> Any:
        with self._busy:
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


class Sealer:
    """Follows one log's sidecar; signs its checkpoints while it holds the sealer lock."""

    def __init__(
        self,
        log_path: str,
        key_path: str,
        *,
        epoch: float,
        logger: logging.Logger | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        directory, name = os.path.split(os.path.abspath(log_path))
        self.log_path = log_path
        self.key_path = key_path
        self.epoch = epoch
        self.logger = logger or logging.getLogger(__package__)
        self.stderr = stderr
        self.sidecar = SidecarFile(sidecar_path(log_path))
        self.lock = LockFile(os.path.join(directory, f".{name}.lock"), log_path)
        self._sealer_path = os.path.join(directory, f".{name}.sealer")
        self._writers_path = writers_lock_path(log_path)
        self._sealer_fd: int | None = None
        self._writers_fd: int | None = None
        # The tree as folded so far.
        self.origin = ""
        self.range = CompactRange()
        self.file: tuple[int, int] | None = None
        self.gap = False  # leaves missing from the sidecar: nothing to sign until a new tree
        self._file_starts: list[tuple[int, list[bytes]]] = []  # to sign, with their ranges
        # The key chain as the sidecar says.
        self.certified: str | None = None  # the verifier the last key change names
        self.key_origin = ""
        self.key_size = 0
        self.signed = ("", -1)  # the last checkpoint: origin, size
        self.digest = records_digest()  # of the lines since the last key change
        # The sealer's own.
        self.signer: Signer | None = None
        self.key_since = 0.0
        self.checkpoints = 0
        self._busy = threading.RLock()

    @property
    def sealing(self) -> bool:
        """Whether this process holds the sealer lock."""
        return self._sealer_fd is not None

    # -- in a thread ------------------------------------------------------

    @_one_at_a_time
    def start(self) -> None:
        """Join the writers and read the sidecar from its last key change."""
        self._writers_fd = _lock_file(self._writers_path)
        fcntl.flock(self._writers_fd, fcntl.LOCK_SH)
        size = self.sidecar.open(create=False)
        with self.lock.held():
            self._anchor(size)
            self._fold(self.sidecar.read_new())

    @_one_at_a_time
    def tick(self, *, now: float | None = None) -> None:
        """Follow the sidecar; as the sealer, sign what is new, and change the key when due."""
        now = time.monotonic() if now is None else now
        with self.lock.held():
            self._fold(self.sidecar.read_new())
        # Taken over again after a failure too (a key file gone, say).
        if (self.sealing or self._try_sealer_lock()) and self.signer is None:
            self._take_over(now)
        if not self.sealing or self.signer is None:
            return
        if self.key_origin != self.origin:
            self.change_key("tree", now)
        elif now - self.key_since >= self.epoch:
            self.change_key("epoch", now)
        else:
            self.checkpoint()

    @_one_at_a_time
    def stop(self, *, wait: float = 2.0) -> None:
        """At a clean stop: the last process to stop signs everything and changes the key."""
        try:
            if self._writers_fd is not None:
                fcntl.flock(self._writers_fd, fcntl.LOCK_UN)
                try:
                    fcntl.flock(self._writers_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # others still write: the last of them seals
                deadline = time.monotonic() + wait
                while not self.sealing and not self._try_sealer_lock():
                    if time.monotonic() > deadline:
                        self.logger.error("login log: no clean-stop seal: the sealer lock is held")
                        return
                    time.sleep(0.01)
                with self.lock.held():
                    self._fold(self.sidecar.read_new())
                if self.signer is None:
                    self._take_over(time.monotonic())
                if self.signer is not None and self.key_origin != self.origin:
                    self.change_key("tree", time.monotonic())
                if self.signer is not None:
                    self.change_key("stop", time.monotonic())
        finally:
            self.close()

    @_one_at_a_time
    def close(self) -> None:
        """Let go of the locks and the sidecar, and forget the key."""
        self.signer = None
        for name in ("_sealer_fd", "_writers_fd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                os.close(fd)
        self.sidecar.close()
        self.lock.close()

    def checkpoint(self) -> None:
        """Sign a checkpoint of the tree as folded, if it grew (and one per file start)."""
        origin, size = self.origin, self.range.size
        if self.gap or not origin or (self.signed == (origin, size) and not self._file_starts):
            return
        self._sync_log()
        assert self.signer is not None
        signed = self._file_start_notes()
        if self.signed != (origin, size):
            body = Checkpoint(origin, size, self.range.root())
            signed.append(Signed("C", self.signer.sign(body.text())))
        if not signed:
            return
        self._append(lambda: signed)
        self.signed = (origin, size)
        self.checkpoints += 1

    def change_key(self, reason: str, now: float) -> None:
        """A new key, certified by the current one with the tree as folded (see :mod:`.keys`)."""
        assert self.signer is not None
        if self.gap or not self.origin:
            return  # nothing to certify: a tree with missing leaves, or none yet
        following = Signer.generate(self.signer.name)
        keys.write_next(self.key_path, following, self.log_path)
        origin, size, roots = self.origin, self.range.size, self.range.roots
        self._sync_log()
        starts = self._file_start_notes()
        signer = self.signer

        def records() -> list[Signed]:
            # Signed with the lock held: it signs the digest of every line before it.
            digest = self.digest.copy()
            for record in starts:  # appended with it, before it
                digest.update(record.encode())
            body = Checkpoint(
                origin,
                size,
                fold_roots(roots),
                following.verifier.encoded(),
                reason,
                digest.digest(),
            )
            return [*starts, Signed("K", signer.sign(body.text()), tuple(roots))]

        self._append(records)  # raises if not written: the old key goes on
        try:
            self.sidecar.sync()
        finally:
            # Written, the change stands: the old key's last reference goes (freed,
            # and cleared by OpenSSL). Should the rename fail, the next tick takes the
            # key over again, and recover() finishes the change.
            self.signer = None
            keys.commit_next(self.key_path)
            self.signer = following
        self.certified = following.verifier.encoded()
        self.key_origin, self.key_size, self.key_since = origin, size, now
        self.signed = (origin, size)

    def _file_start_notes(self) -> list[Signed]:
        # A checkpoint at each file's first leaf, with the tree's range there:
        # where verify --start can begin once older files are gone.
        # A file that has no line yet waits for its first.
        assert self.signer is not None
        size = self.range.size
        ready = [(at, roots) for at, roots in self._file_starts if 0 < at < size]
        self._file_starts = [(at, roots) for at, roots in self._file_starts if at >= size]
        return [
            Signed(
                "C",
                self.signer.sign(Checkpoint(self.origin, at, fold_roots(roots)).text()),
                tuple(roots),
            )
            for at, roots in ready
        ]

    # -- helpers ----------------------------------------------------------

    def _take_over(self, now: float) -> None:
        signer = keys.recover(self.key_path, self.certified)
        self.signer, self.key_since = signer, now
        if self.certified == signer.verifier.encoded():
            return
        if self.certified is not None:
            # A key the seals do not name (a new keygen, say): the chain cannot go on.
            self._new_tree(
                "the signing key is not the one the seals certify: a new chain begins",
                expected=self.certified,
                found=signer.verifier.encoded(),
            )
        self.key_origin = ""  # its first act: certify the tree (reason "start")
        self.change_key("start", now)

    def _new_tree(self, why: str, **facts: object) -> None:
        origin = new_origin(self.signer.name if self.signer else "login-log")
        details = {"why": why, "origin": self.origin, "sealed": self.range.size, **facts}
        details["new_origin"] = origin
        self.logger.error("login log: %s; a new tree begins as %s", why, origin)
        with self.lock.held():
            self._fold(self.sidecar.read_new())
            self.sidecar.append(Break(details).encode() + Tree(origin).encode(), reread=True)
            self._fold(self.sidecar.read_new())

    def _anchor(self, size: int) -> None:
        # Start from the last key change (its range is the tree at its size),
        # and the leaves recorded after the sealer read up to it.
        fd = self.sidecar.fd
        assert fd is not None
        at = last_line_starting(fd, size, b"K ")
        if at is None:
            return
        record = record_at(fd, at)
        if not isinstance(record, Signed):
            return
        ranged = record.range or ()
        try:
            body = Checkpoint.parse(record.note.split("\n\n", 1)[0] + "\n")
        except NoteError:
            return
        if body.next_key is None or fold_roots(ranged) != body.root:
            return
        resume = _after_leaf(fd, at, body.size)
        if resume is None:
            return
        self.origin, self.range = body.origin, CompactRange(body.size, list(ranged))
        self.certified, self.key_origin, self.key_size = body.next_key, body.origin, body.size
        self.signed = (body.origin, body.size)
        self.sidecar.offset = resume

    def _fold(self, records: Iterable[tuple[bytes, Record | None]]) -> None:
        # Its own records too, as written (even in part): the digest a key change
        # signs is of the lines as verify will read them.
        for line, record in records:
            if not (isinstance(record, Signed) and record.kind == "K" and is_whole(record.note)):
                self.digest.update(line + b"\n")
            if isinstance(record, Leaves):
                if record.index != self.range.size:
                    if record.index > self.range.size and not self.gap:
                        self.gap = True
                        self.logger.error(
                            "login log: the seal file lacks leaves %d to %d of %s: "
                            "nothing more is sealed until a new tree",
                            self.range.size,
                            record.index,
                            self.origin,
                        )
                    continue
                self.range.extend(record.hashes)
            elif isinstance(record, Moved):
                self.file = record.identity
            elif isinstance(record, File):
                self.file = record.identity
                if record.index == self.range.size and not self.gap:
                    self._file_starts.append((record.index, self.range.roots))
            elif isinstance(record, Tree):
                self.origin, self.range, self.file, self.gap = (
                    record.origin,
                    CompactRange(),
                    None,
                    False,
                )
                self._file_starts = []
            elif isinstance(record, Signed):
                self._fold_signed(record)

    def _fold_signed(self, record: Signed) -> None:
        if not is_whole(record.note):
            return
        try:
            body = Checkpoint.parse(record.note.split("\n\n", 1)[0] + "\n")
        except NoteError:
            return
        if record.kind == "K" and body.next_key is not None:
            self.certified, self.key_origin, self.key_size = body.next_key, body.origin, body.size
            self.digest = records_digest()
        if record.range is not None:  # a file start signed (by whichever process sealed)
            self._file_starts = [start for start in self._file_starts if start[0] != body.size]
        if body.origin != self.signed[0] or body.size > self.signed[1]:
            self.signed = (body.origin, body.size)

    def _append(self, make: Callable[[], list[Signed]]) -> None:
        with self.lock.held():
            self._fold(self.sidecar.read_new())
            signed = make()
            self.sidecar.append(b"".join(record.encode() for record in signed), reread=True)
        out = self.stderr or sys.stderr
        with contextlib.suppress(OSError, ValueError):
            out.write("".join(f"{STDERR_PREFIX}{one_line(record.note)}\n" for record in signed))
            out.flush()

    def _sync_log(self) -> None:
        # The lines a checkpoint covers are on disk before it is signed. They are in
        # the file the last F record names; if the path names another by now (rotated,
        # and nothing appended since), that file cannot be reached: sync everything.
        try:
            fd = os.open(self.log_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            os.sync()
            return
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) == self.file:
                _datasync(fd)
            else:
                os.sync()
        finally:
            os.close(fd)

    def _try_sealer_lock(self) -> bool:
        fd = _lock_file(self._sealer_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._sealer_fd = fd
        return True


def writers_lock_path(log_path: str) -> str:
    """``.LOG.writers``: held shared by every process writing the log."""
    directory, name = os.path.split(os.path.abspath(log_path))
    return os.path.join(directory, f".{name}.writers")


def is_being_written(log_path: str) -> bool:
    """Whether a process is writing the log at ``log_path`` now (holds its writers lock)."""
    try:
        fd = os.open(writers_lock_path(log_path), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _lock_file(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot open the lock file {path!r}: {exc.strerror}") from None


def _after_leaf(fd: int, before: int, size: int) -> int | None:
    """The offset just after the ``L`` record ending at leaf ``size``, searched backwards
    from ``before`` (a key change records the tree the sealer had read, and writers may
    have appended more before the change was written)."""
    window = max(0, before - (1 << 22))
    best = None
    for offset, _, line in lines_from(fd, window, before):
        if line.startswith(b"L "):
            try:
                record = parse(line)
            except ValueError:
                continue
            if isinstance(record, Leaves) and record.index + record.count == size:
                best = offset + len(line) + 1
        elif line.startswith(b"T ") and size == 0:
            best = offset  # the tree's records, from its start
    return best
