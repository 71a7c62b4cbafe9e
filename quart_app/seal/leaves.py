"""The writing thread's part of sealing: the leaf hash of every line appended, into the sidecar.

:class:`LeafRecorder` is the file store's ``appended`` hook: it runs with the
log's lock held, so that with ``-w N`` every process records its lines in
file order, after those of the others (which it reads first). It keeps no
tree: the sealer (:mod:`.sealer`) folds the hashes and signs.

It also holds the line between the log and what was sealed: at start, the
current file must be what the sidecar recorded of it; lines the sidecar
lacks (a crash between the two appends, a full disk) are hashed from the file
and recorded; a file cut short, edited, or grown after a clean stop is a
break, and a new tree begins.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..stores.file import FileState
from .merkle import leaf_hash
from .sidecar import (
    HEADER,
    Break,
    Damaged,
    File,
    Leaves,
    Moved,
    Record,
    SidecarFile,
    Signed,
    Start,
    Tree,
    last_line_starting,
    lines_from,
    parse,
    record_at,
    sidecar_path,
)

MAX_LEAVES = 2048
"""Leaf hashes per ``L`` record at most."""


def new_origin(key_name: str) -> str:
    """A tree's origin: the key's name, the time and a random part, so that no two trees
    of one host share one."""
    return f"{key_name}/{int(time.time())}-{secrets.token_hex(4)}"


def reason_of(record: Signed) -> str | None:
    """The ``reason`` extension line of a key change's note, read without checking it."""
    for line in record.note.split("\n\n", 1)[0].split("\n")[3:]:
        if line.startswith("reason "):
            return line.removeprefix("reason ")
    return None


@dataclass(slots=True)
class Position:
    """Where the tree stands, as the sidecar says: what a writer needs to go on."""

    origin: str = ""
    size: int = 0  # leaves in the tree
    file: tuple[int, int] | None = None  # the current file's identity
    file_start: int = 0  # the leaf the current file begins with
    end: int = 0  # bytes of the current file the leaves cover
    stopped: bool = False  # the last thing recorded was a clean stop
    first_hash: bytes = b""  # the current file's first line's leaf hash

    def apply(self, record: Record | None) -> None:
        """Take one record in."""
        if isinstance(record, Leaves):
            if record.index != self.size:
                return  # not contiguous: damaged; the gap is caught up from the file
            if record.index == self.file_start:
                self.first_hash = record.hashes[:32]
            self.size += record.count
            self.end = record.end
            self.stopped = False
        elif isinstance(record, File):
            self.file, self.file_start, self.end, self.stopped = (
                record.identity,
                record.index,
                0,
                False,
            )
            self.size, self.first_hash = record.index, b""
        elif isinstance(record, Moved):
            self.file = record.identity
        elif isinstance(record, Tree):
            self.origin, self.size, self.file, self.end = record.origin, 0, None, 0
        elif isinstance(record, Start):
            self.stopped = False
        elif isinstance(record, Signed) and record.kind == "K":
            self.stopped = reason_of(record) == "stop"


class LeafRecorder:
    """The file store's ``appended`` hook for a sealed log (see the module docstring)."""

    def __init__(
        self,
        log_path: str,
        key_name: str,
        *,
        mode: int = 0o640,
        logger: logging.Logger | None = None,
        on_break: Callable[[dict[str, object]], None] | None = None,
    ) -> None:
        self.sidecar = SidecarFile(sidecar_path(log_path), mode)
        self.log_path = log_path
        self.key_name = key_name
        self.logger = logger or logging.getLogger(__package__)
        self.on_break = on_break
        self.position = Position()
        self._file_offset = -1  # where the current file's records begin in the seal file
        self.breaks = 0
        self._failing = False

    def __call__(self, data: bytes, state: FileState) -> None:
        """Record ``data``, appended at ``state.size``, after anything the sidecar lacks."""
        if self.sidecar.fd is None:
            self._start(state)  # raises: the app does not start without its seals
            return
        records: list[bytes] = []
        try:
            self._read()
            self._catch_up(state, records, more=bool(data))
            if data:
                self._leaves(data, state.size + len(data), records)
            self.sidecar.append(b"".join(records))
        except OSError as exc:
            # The lines are in the log: the next append records them (a full disk
            # delays the seals, it never refuses a login).
            if not self._failing:
                self._failing = True
                self.logger.error(
                    "login log: cannot record seals in %s (%s); lines are sealed once it works",
                    self.sidecar.path,
                    exc,
                )
            self._forget()
            return
        if self._failing:
            self._failing = False
            self.logger.warning("login log: recording seals in %s works again", self.sidecar.path)

    def close(self) -> None:
        """Close the sidecar."""
        self.sidecar.close()

    def _forget(self) -> None:
        # What was appended is unknown: read it again from the last file record.
        self.sidecar.close()
        self.position = Position()

    def _start(self, state: FileState) -> None:
        size = self.sidecar.open(create=True)
        records: list[bytes] = []
        if size == 0:
            self._begin_tree(state, records, None)
        else:
            self._load(size)
            self._check_file(state, records)
        records.append(Start(os.getpid()).encode())
        try:
            self.sidecar.append(b"".join(records))
        except OSError as exc:
            self.logger.error("login log: cannot record seals in %s (%s)", self.sidecar.path, exc)
            self._forget()

    def _load(self, size: int) -> None:
        fd = self.sidecar.fd
        assert fd is not None
        if os.pread(fd, len(HEADER), 0) != HEADER:
            raise OSError(
                f"{self.sidecar.path!r} is not a seal file (it does not begin {HEADER!r}); "
                "move it away to seal the log afresh"
            )
        # From the last tree and file records, not the first line: a year of seals
        # is read once, by verify.
        tree = last_line_starting(fd, size, b"T ")
        begin = last_line_starting(fd, size, b"F ")
        self.position = Position()
        self.sidecar.offset = 0
        # Where the current file's L records are (none: the tree has no file yet).
        self._file_offset = begin if begin is not None and (tree is None or begin > tree) else -1
        if tree is not None:
            self.position.apply(record_at(fd, tree))
            self.sidecar.offset = tree if begin is None or begin < tree else begin
        for _, record in self.sidecar.read_new():
            self.position.apply(record)

    def _read(self) -> None:
        for _, record in self.sidecar.read_new():
            self.position.apply(record)

    def _check_file(self, state: FileState, records: list[bytes]) -> None:
        # At start: the current file must be what was sealed of it. The same lines
        # under another identity (copied back, restored) are the same file, moved.
        position = self.position
        expected = self._sealed_hashes()  # read as compared: a big file is not held
        first = next(expected, b"")
        moved = position.file != state.identity
        if moved and not (first and _first_hash(state) == first):
            if position.stopped and state.size:
                return self._break(
                    state, records, "lines were added to a new file after a clean stop"
                )
            return self._catch_up(state, records, more=False)
        if moved:
            records.append(Moved(position.file_start, state.identity).encode())
            position.file = state.identity
        number = 0
        expected = itertools.chain([first] if first else [], expected)
        for number, line in enumerate(_lines(state, 0, position.end), 1):
            sealed = next(expected, b"")
            if leaf_hash(line) != sealed:
                return self._break(
                    state,
                    records,
                    f"line {number} of the file is not the line sealed",
                    line=number,
                    expected=base64.b64encode(sealed).decode() if sealed else None,
                    found=base64.b64encode(leaf_hash(line)).decode(),
                )
        missing = next(expected, None)
        if missing is not None or state.size < position.end:
            sealed_count = number + (missing is not None) + sum(1 for _ in expected)
            return self._break(
                state,
                records,
                f"the file is cut short: it ends at line {number}, {sealed_count} were sealed",
                line=number + 1,
                expected=base64.b64encode(missing).decode() if missing else None,
                found=None,
            )
        if position.stopped and state.size > position.end:
            return self._break(state, records, "lines were added after a clean stop")
        return self._catch_up(state, records, more=False)

    def _sealed_hashes(self) -> Iterator[bytes]:
        # The leaf hashes the seal file recorded of the current file, in order.
        fd, index = self.sidecar.fd, self.position.file_start
        if fd is None or self._file_offset < 0:
            return
        for _, _, line in lines_from(fd, self._file_offset, self.sidecar.size):
            if not line.startswith(b"L "):
                continue
            try:
                record = parse(line)
            except Damaged:
                continue
            if isinstance(record, Leaves) and record.index == index:
                index += record.count
                for start in range(0, len(record.hashes), 32):
                    yield record.hashes[start : start + 32]

    def _catch_up(self, state: FileState, records: list[bytes], *, more: bool) -> None:
        # Records what the file holds that the sidecar lacks; a file begins (an F
        # record) with its first line, so that a file never written to is no file.
        position = self.position
        if position.file != state.identity:
            if not (state.size or more):
                return None
            if (
                position.first_hash
                and state.size >= position.end
                and _first_hash(state) == position.first_hash
            ):
                # The same lines in another file (an editor's save, a copy moved back):
                # the file moved, it did not begin. Whatever follows is checked below.
                records.append(Moved(position.file_start, state.identity).encode())
                position.file = state.identity
                return self._catch_up(state, records, more=more)
            records.append(File(position.size, state.identity).encode())
            position.file, position.file_start, position.end = state.identity, position.size, 0
        if state.size < position.end:
            why = "the file was cut short while being written"
            return self._break(state, records, why, more=more)
        if state.size > position.end:
            for chunk in _chunks(_lines(state, position.end, state.size)):
                self._leaves(chunk, position.end + len(chunk), records)
        return None

    def _leaves(self, data: bytes, end: int, records: list[bytes]) -> None:
        # ``data``: whole lines, ending at byte ``end`` of the current file.
        position = self.position
        lines = data.split(b"\n")
        del lines[-1]
        offset = end - len(data)
        if lines and position.size == position.file_start:
            position.first_hash = leaf_hash(lines[0])
        for start in range(0, len(lines), MAX_LEAVES):
            part = lines[start : start + MAX_LEAVES]
            offset += sum(map(len, part)) + len(part)
            hashes = b"".join([leaf_hash(line) for line in part])
            records.append(Leaves(position.size, offset, hashes).encode())
            position.size += len(part)
            position.end = offset

    def _break(
        self,
        state: FileState,
        records: list[bytes],
        why: str,
        *,
        more: bool = False,
        **facts: object,
    ) -> None:
        position = self.position
        origin = new_origin(self.key_name)
        details = {
            "why": why,
            "origin": position.origin,
            "sealed": position.size,
            "file": self.log_path,
            "new_origin": origin,
            **facts,
        }
        self.breaks += 1
        self.logger.error(
            "login log: the log no longer matches its seals (%s); a new tree begins as %s. "
            "Run quart-app-log verify to see what changed",
            why,
            origin,
        )
        if self.on_break is not None:
            self.on_break(details)
        records.append(Break(details).encode())
        self._begin_tree(state, records, origin, more=more)

    def _begin_tree(
        self, state: FileState, records: list[bytes], origin: str | None, *, more: bool = False
    ) -> None:
        origin = origin or new_origin(self.key_name)
        if not records and self.sidecar.offset == 0:
            records.append(HEADER)
        records.append(Tree(origin).encode())
        self.position = Position(origin=origin)
        self._catch_up(state, records, more=more)


def _first_hash(state: FileState) -> bytes:
    first = state.read(0, 1 << 16).split(b"\n", 1)
    return leaf_hash(first[0]) if len(first) == 2 else b""


def _lines(state: FileState, begin: int, end: int) -> Iterator[bytes]:
    # The whole lines of the file between two line ends, read in chunks.
    offset, pending = begin, b""
    while offset < end:
        chunk = state.read(offset, min(1 << 20, end - offset))
        if not chunk:
            return
        offset += len(chunk)
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        yield from lines


def _chunks(lines: Iterator[bytes]) -> Iterator[bytes]:
    part: list[bytes] = []
    for line in lines:
        part.append(line + b"\n")
        if len(part) == MAX_LEAVES:
            yield b"".join(part)
            part = []
    if part:
        yield b"".join(part)
