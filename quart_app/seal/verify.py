"""Verifying a sealed log: its files, in rotation order, against the sidecar and the keys.

One pass over the sidecar, reading the log's lines as the ``L`` records
reach them: each line's leaf hash must be the one recorded (else the log
alone changed, and the line is named), the recorded hashes must fold to the
roots the checkpoints sign (else the sidecar changed too: the range between
two checkpoints is named), and every signature must be by the key the chain
of key changes, from a given key, makes current. Memory stays small: the
compact range, and the ranges at the batch ends not yet checkpointed.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..trail.files import CHUNK, gunzipped, is_gzip
from .certs import Checkpoint, is_whole, records_digest
from .merkle import CompactRange, fold_roots
from .note import NoteError, Verifier, open_note
from .sidecar import (
    HASH_SIZE,
    HEADER,
    MAX_RECORD,
    STDERR_PREFIX,
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
    note_of,
    parse,
)

SEGMENTS = 8
"""Folds kept (each up to a chunk of the seal file) for the roots checkpoints name."""


class Failed(Exception):
    """The first place a tree does not verify."""


@dataclass
class TreeReport:
    """What was proved of one tree."""

    origin: str
    lines: int = 0
    sealed: int = 0  # lines covered by a valid checkpoint
    checkpoints: int = 0
    keys: list[str] = field(default_factory=list)
    failure: str | None = None
    broke: dict[str, object] | None = None  # the break that began it
    started_at: int = 0  # --start: the lines before were not checked


@dataclass
class Report:
    """What :func:`verify` proved, and the first thing that failed."""

    trees: list[TreeReport] = field(default_factory=list)
    files: list[tuple[str, int]] = field(default_factory=list)  # name, lines read
    damaged: int = 0
    unsealed: int = 0
    stopped: bool = False
    failures: list[str] = field(default_factory=list)
    external: int = 0  # checkpoints held elsewhere that matched
    before_start: int = 0  # those of lines before --start, not checked

    @property
    def ok(self) -> bool:
        """Whether everything verified."""
        return not self.failures and not any(tree.failure for tree in self.trees)


class _Lines:
    """The log's files, one after the other, as leaf hashes, counting lines."""

    def __init__(self, paths: list[str], report: Report) -> None:
        self.paths = paths
        self.report = report
        self.index = -1
        self.name = ""
        self.number = 0  # lines read from the current file
        self._chunks: Iterator[list[bytes]] = iter(())
        self._buffer: list[bytes] = []  # the leaf hashes of a chunk of the file
        self._at = 0  # those taken
        self.partial = False

    def open(self, index: int) -> None:
        self.close()
        self.index, self.name, self.number = index, self.paths[index], 0
        self._chunks = _leaf_hashes(self.paths[index], self)
        self._buffer, self._at = [], 0
        self.report.files.append((self.name, 0))

    def close(self) -> None:
        if self.index >= 0 and self.report.files:
            self.report.files[-1] = (self.name, self.number)

    def take(self, count: int) -> bytes:
        """The next ``count`` lines' leaf hashes, concatenated (fewer at the file's end)."""
        at, end = self._at, self._at + count
        if end <= len(self._buffer):
            self._at = end
            self.number += count
            return self._buffer[at] if count == 1 else b"".join(self._buffer[at:end])
        parts = self._buffer[at:]
        for chunk in self._chunks:
            need = count - len(parts)
            parts += chunk[:need]
            self._buffer, self._at = chunk, min(need, len(chunk))
            if len(parts) == count:
                break
        else:
            self._buffer, self._at = [], 0
        self.number += len(parts)
        return b"".join(parts)

    def rest(self) -> int:
        count = len(self._buffer) - self._at + sum(len(chunk) for chunk in self._chunks)
        self._buffer, self._at = [], 0
        self.number += count
        return count


def _leaf_hashes(path: str, lines: _Lines) -> Iterator[list[bytes]]:
    # The RFC 6962 leaf hashes of the whole lines, a chunk's at a time; a line of
    # any length is hashed as it streams by, never held whole.
    sha256 = hashlib.sha256
    with open(path, "rb") as raw:
        chunks = gunzipped(raw) if is_gzip(raw) else iter(lambda: raw.read(CHUNK), b"")
        long: hashlib._Hash | None = None
        rest = b""
        for chunk in _read(chunks, path):
            data = rest + chunk if rest else chunk
            end = data.rfind(b"\n")
            if end < 0:
                long = long or sha256(b"\x00")
                long.update(data)
                rest = b""
                continue
            pieces = data[:end].split(b"\n")
            hashes = []
            if long is not None:
                long.update(pieces[0])
                hashes.append(long.digest())
                long = None
                pieces = pieces[1:]
            hashes += [sha256(b"\x00" + piece).digest() for piece in pieces]
            yield hashes
            rest = data[end + 1 :]
            if len(rest) > CHUNK:
                long, rest = sha256(b"\x00" + rest), b""
        lines.partial = bool(rest) or long is not None


def _sidecar_chunks(fd: int, report: Report) -> Iterator[list[bytes]]:
    # The seal file's lines after its header, a large chunk's at a time; a line
    # longer than any record is one damaged line (b""), as the sealer reads it.
    offset, rest, skipping = len(HEADER), b"", False
    while chunk := os.pread(fd, CHUNK, offset):
        offset += len(chunk)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        if skipping and lines:
            lines[0] = b""
            skipping = False
        if lines:
            yield lines
        if len(rest) > MAX_RECORD:
            rest, skipping = b"", True
    if rest or skipping:
        report.damaged += 1  # being written, or cut short: not a line yet


def _read(chunks: Iterator[bytes], path: str) -> Iterator[bytes]:
    try:
        yield from chunks
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise Failed(f"{path}: cannot be read to its end ({exc})") from None


@dataclass
class _Tree:
    report: TreeReport
    range: CompactRange | None = field(default_factory=CompactRange)
    size: int = 0  # leaves the sidecar recorded
    file: tuple[int, int] | None = None
    file_start: int = 0
    # Leaf hashes gathered, folded a chunk of the seal file at a time.
    batch: list[bytes] = field(default_factory=list)
    batch_start: int = 0
    # The last folds: (size before, compact range before, hashes), for the root at a
    # size a checkpoint names (it may come after lines beyond it).
    segments: list[tuple[int, list[bytes], bytes]] = field(default_factory=list)
    snapshots: dict[int, list[bytes]] = field(default_factory=dict)  # where files start
    pending: list[bytes] | None = None  # --start: hashes before the range is known
    failed: bool = False
    last_checkpoint: int = 0


class Verification:
    """One verification (see :func:`verify`)."""

    def __init__(
        self,
        paths: list[str],
        trusted: list[Verifier],
        copies: list[str],
        start: int | None,
        running: bool,
    ) -> None:
        self.report = Report()
        self.running = running
        self.lines = _Lines(paths, self.report)
        self.trusted = trusted
        self.start = start  # --start: the leaf of the checkpoint to start at
        self.skipping = start is not None
        self.tree: _Tree | None = None
        self.key: Verifier | None = None  # the key the chain makes current
        self.key_origin = ""
        self.key_size = 0
        self.chain_keys: list[Verifier] = []
        self.broke: dict[str, object] | None = None
        self.file_ids: dict[tuple[int, int], int] = {}  # identity: index of the file given
        self.copies = copies
        self.record_number = 0
        self.stop_size = 0  # the tree's size at the last clean stop's key change
        self.digest = records_digest()  # of the lines since the last key change
        self.uncovered = 0  # damaged lines since then
        self.pending: list[bytes] = []  # those, as read, to check if no key change follows
        # Roots at the sizes of the checkpoints held elsewhere, as the log has them.
        self.external: dict[tuple[str, int], bytes] = {}
        self.wanted: set[tuple[str, int]] = set()
        for copy in copies:
            try:
                body = Checkpoint.parse(copy.split("\n\n", 1)[0] + "\n")
            except NoteError:
                continue
            self.wanted.add((body.origin, body.size))

    def run(self, sidecar: str) -> Report:
        """Verify everything; the report says what was proved and what failed."""
        try:
            self._run(sidecar)
        except Failed as exc:
            self.report.failures.append(str(exc))
        if self.tree is not None:
            self.tree.report.lines = self.tree.size
        self.lines.close()
        return self.report

    def _run(self, sidecar: str) -> None:
        file = SidecarFile(sidecar)
        try:
            file.open(create=False)
        except OSError as exc:
            raise Failed(f"{sidecar}: {exc.strerror or exc} (the log was never sealed?)") from None
        assert file.fd is not None
        try:
            if os.pread(file.fd, len(HEADER), 0) != HEADER:
                raise Failed(f"{sidecar} is not a seal file: it does not begin {HEADER!r}")
            for lines in _sidecar_chunks(file.fd, self.report):
                self._lines_of_chunk(lines)
        finally:
            file.close()
        self._end()

    def _lines_of_chunk(self, lines: list[bytes]) -> None:
        # The hot loop: a year of one login a second is 31 million L and C lines.
        # The lines go to the digest a run at a time, up to each key change.
        run_start, counted = 0, self.record_number
        tree = self.tree
        a2b, error = binascii.a2b_base64, binascii.Error
        for number, line in enumerate(lines):
            first = line[:1]
            if first == b"L" and tree is not None:
                # _leaves_line and _leaves, inline for the common case: this line is
                # most of the work.
                try:
                    _, index, _, data = line.split(b" ")
                    hashes = a2b(data, strict_mode=True)
                except (ValueError, error):
                    self._damaged()
                    continue
                size = len(hashes)
                if (
                    size
                    and not size % HASH_SIZE
                    and tree.range is not None
                    and not self.skipping
                    and int(index) == tree.size
                ):
                    if not tree.batch:
                        tree.batch_start = tree.size
                    tree.batch.append(hashes)
                    tree.size += size // HASH_SIZE
                else:
                    self._leaves_line(tree, line)
            elif first == b"C" and tree is not None and line[1:2] == b" ":
                tree.report.checkpoints += 1
                if self.start is not None and line.count(b" ") == 2:
                    self._checkpoint_line(tree, line)  # with a range: where --start begins
                else:
                    self.pending.append(line)
            elif first == b"K":
                self._flush(tree)
                if number > run_start:
                    self.digest.update(b"\n".join(lines[run_start:number]) + b"\n")
                run_start = number + 1
                self.record_number = counted + number + 1
                self._key_change_line(line)
                tree = self.tree
            else:
                self._flush(tree)
                self.record_number = counted + number + 1
                try:
                    record: Record | None = parse(line)
                except Damaged:
                    record = None
                self._record(record)
                tree = self.tree
        self._flush(tree)
        self.record_number = counted + len(lines)
        if len(lines) > run_start:
            self.digest.update(b"\n".join(lines[run_start:]) + b"\n")

    def _record(self, record: object) -> None:
        if record is None:
            self._damaged()
            return
        if isinstance(record, Tree):
            self._new_tree(record.origin)
            return
        if isinstance(record, Break):
            self.broke = record.facts
            return
        if isinstance(record, Start):
            return  # unsigned: only a checkpoint after a clean stop says the app went on
        tree = self.tree
        if tree is None:
            self._damaged()
            return
        if isinstance(record, Moved):
            if record.index == tree.file_start and tree.file is not None:
                self.file_ids[record.identity] = self.lines.index  # the same file, moved
                tree.file = record.identity
            else:
                self._damaged()
        elif isinstance(record, File):
            self._file(tree, record)
        elif isinstance(record, Signed):
            self._signed(tree, record)

    def _key_change_line(self, line: bytes) -> None:
        try:
            record = parse(line)
        except Damaged:
            record = None
        if not isinstance(record, Signed) or not is_whole(record.note):
            # Cut short by a crash or a full disk, never signed whole: a line as any other.
            self.digest.update(line + b"\n")
            self._damaged()
            return
        self._record(record)

    def _damaged(self) -> None:
        self.report.damaged += 1
        self.uncovered += 1

    def _leaves_line(self, tree: _Tree, line: bytes) -> None:
        # Most of a seal file, read without making a record of each.
        try:
            _, index, _, data = line.split(b" ")
            hashes = binascii.a2b_base64(data, strict_mode=True)
            first = int(index)
        except (ValueError, binascii.Error):
            self._damaged()
            return
        if not hashes or len(hashes) % HASH_SIZE:
            self._damaged()
            return
        self._leaves(tree, first, hashes)

    def _checkpoint_line(self, tree: _Tree, line: bytes) -> None:
        try:
            record = parse(line)
        except Damaged:
            self._damaged()
            return
        assert isinstance(record, Signed)
        self._signed(tree, record)

    def _settle(self, tree: _Tree) -> None:
        # The checkpoints no key change covers: each checked in full.
        pending, self.pending = self.pending, []
        for line in pending:
            self._checkpoint_line(tree, line)

    def _new_tree(self, origin: str) -> None:
        if self.tree is not None:
            self._settle(self.tree)
            self._finish_tree(self.tree)
        report = TreeReport(origin)
        if self.report.trees:
            report.broke = self.broke or {"why": "a new tree began with no break recorded"}
        self.broke = None
        self.report.trees.append(report)
        self.tree = _Tree(report)
        if (origin, 0) in self.wanted:
            self.external[(origin, 0)] = CompactRange().root()
        if self.skipping:
            self.tree.range = None

    def _fail(self, tree: _Tree, message: str) -> None:
        if not tree.failed:
            tree.failed = True
            tree.report.failure = message

    def _file(self, tree: _Tree, record: File) -> None:
        # The next file begins; the first file of a tree after a break is the file
        # current at the break.
        if record.index != tree.size:
            self._damaged()
            return
        if self.skipping:
            if record.index != self.start:
                return
            self.skipping = False  # the first file given begins here
            tree.report.started_at = record.index
            tree.pending = []
            following = 0
        elif tree.size == 0 and self.file_ids.get(record.identity) == self.lines.index >= 0:
            following = self.lines.index  # read again, from its first line
        else:
            if not tree.failed and self.lines.index >= 0:
                extra = self.lines.rest()
                if extra:
                    self._fail(
                        tree,
                        f"{self.lines.name}: {extra:,} line(s) after line "
                        f"{self.lines.number - extra:,} were never sealed, "
                        "yet the next file began (added while the app was down?)",
                    )
            following = self.lines.index + 1
        if following >= len(self.lines.paths):
            raise Failed(
                f"a file is missing: the seals say a file begins at line {record.index + 1:,} "
                f"of {tree.report.origin}, and no more files were given"
            )
        self.lines.close()
        self.lines.open(following)
        self.file_ids[record.identity] = following
        tree.file, tree.file_start = record.identity, record.index
        if tree.range is not None:
            tree.snapshots[record.index] = tree.range.roots

    def _leaves(self, tree: _Tree, index: int, hashes: bytes) -> None:
        if index != tree.size:
            self._flush(tree)
            if index < tree.size:
                self._damaged()
                return
            raise Failed(
                f"the seal file lacks leaves {tree.size + 1:,} to {index:,} of "
                f"{tree.report.origin}: the sidecar was changed"
            )
        count = len(hashes) // HASH_SIZE
        if self.skipping:
            tree.size += count
            return
        if tree.range is None:  # --start: folded once its checkpoint gives the range
            tree.size += count
            if not tree.failed:
                found = self.lines.take(count)
                if found != hashes:
                    self._mismatch(tree, found, Leaves(index, 0, hashes))
            assert tree.pending is not None
            tree.pending.append(hashes)
            return
        if not tree.batch:
            tree.batch_start = tree.size
        tree.batch.append(hashes)
        tree.size += count

    def _flush(self, tree: _Tree | None) -> None:
        # The gathered leaves: compared with the log's lines and folded, in one go.
        if tree is None or not tree.batch:
            return
        hashes = b"".join(tree.batch)
        tree.batch = []
        start = tree.batch_start
        if not tree.failed:
            found = self.lines.take(len(hashes) // HASH_SIZE)
            if found != hashes:
                self._mismatch(tree, found, Leaves(start, 0, hashes))
        assert tree.range is not None
        tree.segments.append((start, tree.range.roots, hashes))
        del tree.segments[:-SEGMENTS]
        tree.range.extend(hashes)
        for origin, size in self.wanted:
            if origin == tree.report.origin and start < size <= tree.size and not tree.failed:
                roots = self._roots_at(tree, size)
                if roots is not None:
                    self.external[(origin, size)] = fold_roots(roots)

    def _roots_at(self, tree: _Tree, size: int) -> list[bytes] | None:
        """The tree's compact range at ``size``, if still known."""
        assert tree.range is not None
        if size == tree.range.size:
            return tree.range.roots
        if size in tree.snapshots:
            return tree.snapshots[size]
        for start, roots, hashes in reversed(tree.segments):
            if start <= size <= start + len(hashes) // HASH_SIZE:
                folded = CompactRange(start, list(roots))
                folded.extend(hashes[: (size - start) * HASH_SIZE])
                return folded.roots
        return None

    def _mismatch(self, tree: _Tree, found: bytes, record: Leaves) -> None:
        count = len(found) // HASH_SIZE
        first = self.lines.number - count  # lines of this file before the record
        for i in range(record.count):
            if (
                found[i * HASH_SIZE : (i + 1) * HASH_SIZE]
                != record.hashes[i * HASH_SIZE : (i + 1) * HASH_SIZE]
            ):
                break
        if i >= count:
            self._fail(
                tree,
                f"{self.lines.name}: cut short: it ends at line {self.lines.number:,}, and "
                f"the seals record {record.count - count:,} more line(s)",
            )
        else:
            self._fail(
                tree,
                f"{self.lines.name} line {first + i + 1:,}: not the line sealed "
                f"(changed, removed, added or moved; line {record.index + i + 1:,} of the tree "
                f"{tree.report.origin})",
            )

    def _signed(self, tree: _Tree, record: Signed) -> None:
        kind = "checkpoint" if record.kind == "C" else "key change"
        if not is_whole(record.note):
            self._damaged()  # a checkpoint cut short by a crash or a full disk
            return
        try:
            body = Checkpoint.parse(record.note.split("\n\n", 1)[0] + "\n")
        except NoteError as exc:
            raise Failed(
                f"sidecar record {self.record_number:,}: a {kind} that is malformed ({exc})"
            ) from None
        if (record.kind == "K") != (body.next_key is not None):
            raise Failed(f"sidecar record {self.record_number:,}: a {kind} of the wrong form")
        signer = self._check_signature(tree, record, body, kind)
        if body.origin != tree.report.origin:
            raise Failed(f"a {kind} for {body.origin}, in the tree {tree.report.origin}")
        if body.size > tree.size:
            raise Failed(
                f"a {kind} of {body.size:,} lines of {body.origin}, of which the seals record "
                f"only {tree.size:,}: the sidecar was cut"
            )
        if body.reason == "tree":
            # The current key certifies the tree begun after a break, once.
            outside = self.key_origin == body.origin
        else:
            outside = self.key_origin != body.origin or body.size < self.key_size
        if signer is not self.trusted_root and outside:
            raise Failed(
                f"a {kind} of {body.size:,} lines signed by a key certified only from line "
                f"{self.key_size:,} of {self.key_origin or 'no tree'}: re-sealed with a newer key"
            )
        self._check_root(tree, record, body, kind)
        if record.kind == "C" and body.size > self.stop_size:
            self.report.stopped = False  # sealed since the clean stop: the app went on
        if record.kind == "K":
            assert body.next_key is not None
            if body.records != self.digest.digest():
                raise Failed(
                    f"the seal file's records before the key change at line {body.size:,} of "
                    f"{body.origin} are not those its key signed (changed, added or removed)"
                )
            self.digest, self.pending, self.uncovered = records_digest(), [], 0
            following = Verifier.parse(body.next_key)
            self.key, self.key_origin, self.key_size = following, body.origin, body.size
            self.chain_keys.append(following)
            tree.report.keys.append(following.encoded())
            self.report.stopped = body.reason == "stop"
            self.stop_size = body.size

    trusted_root = object()

    def _check_signature(self, tree: _Tree, record: Signed, body: Checkpoint, kind: str) -> object:
        note = record.note
        if self.key is not None:
            try:
                open_note(note, [self.key])
                return self.key
            except NoteError:
                pass
        # A chain (re)starts with a key change signed by a given key, for a tree of its own.
        if record.kind == "K" and body.reason == "start":
            try:
                open_note(note, self.trusted)
            except NoteError:
                pass
            else:
                if self.key is None or self.key_origin != body.origin:
                    return self.trusted_root
        raise Failed(
            f"a {kind} of {body.size:,} lines of {body.origin} that no key of the chain signed "
            "(a foreign key, a forged or re-made seal)"
        )

    def _check_root(self, tree: _Tree, record: Signed, body: Checkpoint, kind: str) -> None:
        if record.range is not None and fold_roots(record.range) != body.root:
            raise Failed(f"a {kind} whose range does not fold to its root: the sidecar was changed")
        if tree.range is None:
            # --start: the checkpoint to start at gives the range.
            if record.range is None or body.size != tree.report.started_at or self.skipping:
                return
            tree.range = CompactRange(body.size, list(record.range))
            waiting = b"".join(tree.pending or ())  # one fold: its sizes all found again
            tree.segments.append((body.size, tree.range.roots, waiting))
            tree.range.extend(waiting)
            tree.pending = None
            for origin, size in self.wanted:  # copies of checkpoints in the lines read so far
                if origin == tree.report.origin and body.size <= size <= tree.range.size:
                    roots = self._roots_at(tree, size)
                    if roots is not None:
                        self.external[(origin, size)] = fold_roots(roots)
            tree.last_checkpoint = body.size
            tree.report.sealed = body.size
            return
        if self.skipping:
            return
        roots = [] if body.size == 0 else self._roots_at(tree, body.size)
        if roots is None and (record.kind == "C" or body.size < tree.report.started_at):
            # Too far back to fold again: its signature stands, and the checkpoints
            # after it check the lines.
            return
        if roots is None or fold_roots(roots) != body.root:
            if tree.failed:
                return
            self._fail(
                tree,
                f"lines {tree.last_checkpoint + 1:,} to {body.size:,} of {body.origin} do not "
                f"match the {kind} that sealed them (the log and its seal file were both changed)",
            )
            return
        if not tree.failed:
            tree.last_checkpoint = max(tree.last_checkpoint, body.size)
            tree.report.sealed = tree.last_checkpoint

    def _finish_tree(self, tree: _Tree) -> None:
        tree.report.lines = tree.size
        if tree.range is None and not self.skipping and not tree.failed:
            self._fail(tree, f"no checkpoint with a range at line {tree.report.started_at:,}")

    def _end(self) -> None:
        tree = self.tree
        if self.skipping:
            raise Failed(f"no file of the seals begins at line {self.start:,} (see --start)")
        if tree is None:
            raise Failed("the seal file records no tree: nothing was sealed")
        self._settle(tree)
        self._finish_tree(tree)
        if self.uncovered:
            self.report.failures.append(
                f"{self.uncovered:,} damaged line(s) of the seal file after its last key change: "
                "nothing vouches for them (a crash or a full disk leaves one; the next key "
                "change covers it)"
            )
        if not tree.failed and self.lines.index >= 0:
            extra = self.lines.rest()
            if (extra or self.lines.partial) and self.report.stopped:
                self._fail(
                    tree,
                    f"{self.lines.name}: {extra:,} line(s) after line "
                    f"{self.lines.number - extra:,} follow the "
                    "clean stop's seal (added while the app was down)",
                )
            elif self.lines.partial and not self.running:
                self._fail(tree, f"{self.lines.name}: its last line has no newline (added?)")
            self.report.unsealed = extra
        # Files after the last the seals name: only empty ones (a rotation's new file).
        for path in self.lines.paths[self.lines.index + 1 :]:
            if not tree.failed and not _is_empty(path):
                self._fail(tree, f"{path}: not in the seals")
        if not tree.failed and self.report.stopped and tree.size > self.stop_size:
            self._fail(
                tree,
                f"{tree.size - self.stop_size:,} line(s) after the clean stop at line "
                f"{self.stop_size:,} of {tree.report.origin} are sealed by no checkpoint "
                "(added while the app was down?)",
            )
        if not tree.failed:
            self.report.unsealed += tree.size - tree.last_checkpoint
            if self.report.unsealed and not self.running:
                # Allowed only while the app runs: the last interval's lines.
                self._fail(
                    tree,
                    f"the last {self.report.unsealed:,} line(s) are not sealed, and no process "
                    "is writing the log (it ended without a clean stop: start it to seal them)",
                )
        for tree_report in self.report.trees[1:]:
            facts = tree_report.broke or {}
            self.report.failures.append(
                f"a break: {facts.get('why', 'unknown')}; a new tree began: {tree_report.origin}"
            )
        self._check_copies()

    def _check_copies(self) -> None:
        # The copies' own key changes extend the chain: a log cut with its seal file
        # lost later keys, which the copies still name.
        known = self.chain_keys + self.trusted
        opened: dict[int, Checkpoint] = {}
        grew = True
        while grew:
            grew = False
            for number, copy in enumerate(self.copies):
                if number in opened:
                    continue
                try:
                    body = Checkpoint.parse(open_note(copy, known)[0])
                except NoteError:
                    continue
                opened[number] = body
                if body.next_key is not None:
                    known.append(Verifier.parse(body.next_key))
                    grew = True
        trees = {tree.origin: tree for tree in self.report.trees}
        for number in range(len(self.copies)):
            body = opened.get(number)
            if body is None:
                self.report.failures.append(
                    "a checkpoint held elsewhere is signed by no key of this log's chain "
                    "(or is damaged)"
                )
                continue
            tree = trees.get(body.origin)
            if tree is not None and body.size < tree.started_at:
                self.report.before_start += 1  # in the files removed: nothing to check
                continue
            self.report.external += 1
            matched = self.external.get((body.origin, body.size))
            if matched is None:
                self.report.failures.append(
                    f"the log does not reach a checkpoint held elsewhere: {body.size:,} lines of "
                    f"{body.origin} (cut short, or removed)"
                )
            elif matched != body.root:
                self.report.failures.append(
                    "the log differs from a checkpoint held elsewhere: "
                    f"{body.size:,} lines of {body.origin}"
                )
        # A clean stop held elsewhere: lines after it need a checkpoint held elsewhere too
        # (one made with the key on the host alone proves nothing about who added them).
        for origin, tree in trees.items():
            copies = [body for body in opened.values() if body.origin == origin]
            stops = [body.size for body in copies if body.reason == "stop"]
            last = max(stops, default=-1)
            if 0 <= last < tree.lines and not any(body.size > last for body in copies):
                self.report.failures.append(
                    f"{tree.lines - last:,} line(s) of {origin} after the clean stop at line "
                    f"{last:,} held elsewhere, with no later checkpoint held elsewhere"
                )


COPY = re.compile(re.escape(STDERR_PREFIX) + r"([A-Za-z0-9+/]+={0,2})")


def copies_from(text: str) -> list[str]:
    """The signed notes in a ``--checkpoint`` file: each ``login-log-checkpoint BASE64``
    in it (a journal's lines, its JSON export), or the file itself as one note."""
    if STDERR_PREFIX not in text:
        return [text]
    notes = []
    for found in COPY.finditer(text):
        try:
            notes.append(note_of(found.group(1)))
        except Damaged:
            notes.append(found.group(0))
    return notes


def _is_empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def verify(
    paths: list[str],
    sidecar: str,
    keys: list[Verifier],
    *,
    copies: list[str] = (),  # type: ignore[assignment]
    start: int | None = None,
    running: bool = False,
) -> Report:
    """Verify the log ``paths`` (its files in rotation order) against ``sidecar`` and ``keys``.

    ``copies``: checkpoints held elsewhere (signed notes) the log must reach
    and match. ``start``: begin at the file that starts at this line of the
    tree (files before it removed on purpose), trusting its checkpoint. ``running``: the
    app is writing the log now, so the lines since its last checkpoint may be unsealed.
    """
    return Verification(list(paths), list(keys), list(copies), start, running).run(sidecar)
