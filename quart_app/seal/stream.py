"""A sealed table's stream: one writer process's rows, as one Merkle tree with keys of its own.

Each process writing a sealed table is a stream, so that concurrent writers
never fork one chain. Its rows get positions 0, 1, 2... in the order they are
prepared (before their first attempt, with their ids). The stream's first
key is made in memory at start and certified by the host's key (a key change,
reason ``start``, of the empty tree); each epoch it signs the next and is
forgotten; a clean stop signs a last key change, reason ``stop``.

A checkpoint covers a prefix of the positions, and is signed only once every
row in it is committed, or set aside (the table refused it for good: a
``set-aside`` note, signed before the checkpoint, says so). The notes are
handed out as :class:`Note`\\ s, in order, for the checkpoints table and
stderr; this module does no I/O.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from .certs import Checkpoint
from .leaves import new_origin
from .merkle import EMPTY_ROOT, CompactRange
from .note import Signer

_LENGTH = struct.Struct(">I")


def set_aside_text(stream: str, position: int) -> str:
    """The text of a set-aside note: the stream, and the position no row will hold."""
    return f"{stream}\nset-aside {position}\n"


def notes_digest() -> hashlib._Hash:
    """The running digest a stream's key change signs (its ``records`` line): every note of
    the stream since the last key change (not key changes), in order, each as its UTF-8
    length (4 bytes, big-endian) and bytes."""
    return hashlib.sha256()


def add_to_digest(digest: hashlib._Hash, note: str) -> None:
    """Add ``note`` to a :func:`notes_digest`."""
    data = note.encode()
    digest.update(_LENGTH.pack(len(data)) + data)


@dataclass(frozen=True, slots=True)
class Note:
    """One row of the checkpoints table: a signed note and what verifying it needs.

    ``size``: the tree size the note speaks of (a set-aside note: the
    position). ``hashes``: a checkpoint's leaf hashes since the stream's
    previous checkpoint (which rows it covers, so that a changed row is named).
    ``roots``: its compact range (where ``verify`` starts after a purge).
    """

    stream: str
    seq: int
    size: int
    note: str
    hashes: bytes | None = None
    roots: bytes | None = None


class Stream:
    """The state of one stream (see the module docstring); not thread-safe: one event loop."""

    def __init__(self, host_key: Signer, *, epoch: float, now: float, name: str = "") -> None:
        self.name = name or new_origin(host_key.name)
        self.epoch = epoch
        self.next_position = 0
        self.range = CompactRange()  # folded: every position below its size is settled
        self._hashes: dict[int, bytes] = {}  # leaf hashes of the positions not folded yet
        self._settled: set[int] = set()
        self._set_aside: list[int] = []  # not yet in a note
        self._covered = 0  # the size of the last checkpoint
        self._since: list[bytes] = []  # leaf hashes folded since the last checkpoint
        self._seq = 0
        self._digest = notes_digest()
        self.stopped = False
        self.key = Signer.generate(host_key.name)
        self._key_since = now
        body = Checkpoint(
            self.name, 0, EMPTY_ROOT, self.key.verifier.encoded(), "start", self._digest.digest()
        )
        self._first = [self._note(0, host_key.sign(body.text()))]

    @property
    def pending(self) -> int:
        """Positions given out and not settled yet (not committed, nor set aside)."""
        return self.next_position - self.range.size

    def assign(self, hashes: list[bytes]) -> int:
        """Positions for rows with these leaf hashes, in order; returns the first."""
        first = self.next_position
        for offset, hashed in enumerate(hashes):
            self._hashes[first + offset] = hashed
        self.next_position += len(hashes)
        return first

    def settle(self, positions: Iterable[int], *, set_aside: bool = False) -> None:
        """These positions are committed (or, ``set_aside``, refused by the table for good)."""
        for position in positions:
            if position in self._hashes and position not in self._settled:
                self._settled.add(position)
                if set_aside:
                    self._set_aside.append(position)

    def notes(self, now: float) -> list[Note]:
        """The notes due now: the certificate first, set-aside notes, then a checkpoint of the
        positions settled since the last, or a key change when the epoch is over."""
        notes, self._first = self._first, []
        if self.stopped:
            return notes
        self._fold()
        for position in sorted(self._set_aside):
            notes.append(self._note(position, self.key.sign(set_aside_text(self.name, position))))
        self._set_aside.clear()
        if now - self._key_since >= self.epoch and self.range.size > 0:
            notes.append(self._key_change("epoch", now))
        elif self.range.size > self._covered:
            notes.append(self._checkpoint())
        return notes

    def stop(self, now: float) -> tuple[list[Note], int]:
        """The last notes: a key change, reason ``stop``, if every position is settled.

        Returns them and the positions not settled: if any (rows still spooled), the
        stream ends without a clean stop, its tail unsealed, as after a crash.
        """
        notes = self.notes(now)
        left = self.pending
        if not left and not self.stopped:
            notes.append(self._key_change("stop", now))
        self.stopped = True
        return notes, left

    def _fold(self) -> None:
        size = self.range.size
        while size in self._settled:
            hashed = self._hashes.pop(size)
            self._settled.discard(size)
            self.range.append_hash(hashed)
            self._since.append(hashed)
            size += 1

    def _checkpoint(self) -> Note:
        body = Checkpoint(self.name, self.range.size, self.range.root())
        return self._covering(self.key.sign(body.text()))

    def _key_change(self, reason: str, now: float) -> Note:
        following = Signer.generate(self.key.name)
        body = Checkpoint(
            self.name,
            self.range.size,
            self.range.root(),
            following.verifier.encoded(),
            reason,
            self._digest.digest(),
        )
        note = self._covering(self.key.sign(body.text()), key_change=True)
        # The old key signs nothing more: forgotten (forward security, as the file's).
        self.key, self._key_since, self._digest = following, now, notes_digest()
        return note

    def _covering(self, signed: str, *, key_change: bool = False) -> Note:
        note = Note(
            self.name,
            self._next_seq(),
            self.range.size,
            signed,
            b"".join(self._since),
            b"".join(self.range.roots),
        )
        if not key_change:
            add_to_digest(self._digest, signed)
        self._since = []
        self._covered = self.range.size
        return note

    def _note(self, size: int, signed: str) -> Note:
        seq = self._next_seq()
        if seq:  # the certificate starts the digest, it is not in it
            add_to_digest(self._digest, signed)
        return Note(self.name, seq, size, signed)

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq
