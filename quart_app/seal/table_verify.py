"""Verifying a sealed table: every stream's rows against its checkpoints, and the keys.

For each stream, in one snapshot (``REPEATABLE READ``), its notes in order
and its rows in position order, side by side (two cursors): the first note
must be a certificate signed by a host key given (``--key``); every later
note must be signed by the stream's key as the chain of key changes makes
it current, each key change's digest must be that of the notes before it;
each checkpoint's leaf hashes must fold to its signed root, and each row's
leaf (made by SQL from the row, hashed here) must be the hash at its
position. So a row changed, removed, added or moved is named by its stream,
position and id. A position set aside by a signed note may hold no row.

What cannot be proved is said as what it is: the rows after a stream's last
checkpoint (a stream running, or ended without a clean stop: a crash, or a
stop with records still spooled), and the rows before a ``purge`` cut.
Checkpoints held elsewhere (``--checkpoint``) must be in the table: the
newest rows deleted with their checkpoints are caught so.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from ..stores.pg_table import checkpoints_table, quoted
from .certs import Checkpoint, is_whole
from .merkle import CompactRange, fold_roots
from .note import NoteError, Verifier, open_note
from .rows import LEAF_SQL
from .stream import add_to_digest, notes_digest, set_aside_text

FETCH = 20_000
"""Rows per fetch of the cursor."""
NAMED = 20
"""Rows named per kind of failure and stream; the rest are counted."""
CUT_PREFIX = "cut "
"""A purge's mark in the checkpoints table (``seq`` below 0, unsigned): where it cut."""


class Failed(Exception):
    """A stream cannot be checked further; the message says why."""


@dataclass
class StreamReport:
    """What was proved of one stream."""

    name: str
    rows: int = 0
    sealed: int = 0  # positions covered by a checkpoint that verified
    checkpoints: int = 0
    key_changes: int = 0
    set_aside: list[int] = field(default_factory=list)
    stopped: bool = False
    unsealed: int = 0  # rows after the last checkpoint
    cut: int = 0  # a purge's cut: positions before it not checked
    failures: list[str] = field(default_factory=list)
    named: int = 0  # failures naming rows, counted past NAMED

    def fail(self, message: str) -> None:
        """One failure; past :data:`NAMED`, counted only."""
        self.named += 1
        if self.named <= NAMED:
            self.failures.append(message)


@dataclass
class TableReport:
    """What :func:`verify_table` proved, and what failed."""

    streams: list[StreamReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    external: int = 0  # checkpoints held elsewhere found in the table
    before_cut: int = 0

    @property
    def ok(self) -> bool:
        """Whether everything verified."""
        return not self.failures and not any(stream.failures for stream in self.streams)

    @property
    def rows(self) -> int:
        """Rows read, in every stream."""
        return sum(stream.rows for stream in self.streams)


@dataclass
class _Copies:
    """Checkpoints held elsewhere, by stream, each as its note and whether the table has it."""

    by_stream: dict[str, dict[str, bool]] = field(default_factory=dict)
    unreadable: int = 0

    @classmethod
    def of(cls, notes: list[str]) -> _Copies:
        copies = cls()
        for note in notes:
            stream = note.split("\n", 1)[0]
            if "\n" not in note or not stream:
                copies.unreadable += 1
                continue
            copies.by_stream.setdefault(stream, {})[note] = False
        return copies


class _Rows:
    """A stream's rows in position order, as (position, leaf or None for a NULL column),
    fetched a large batch at a time (the check of each row runs without an await)."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self.buffer: list[Any] = []
        self.at = 0
        self.done = False

    async def more(self) -> bool:
        """Fetch the next batch if the buffer is used up; whether any row is left."""
        if self.at < len(self.buffer):
            return True
        if self.done:
            return False
        self.buffer, self.at = await self._cursor.fetch(FETCH), 0
        self.done = len(self.buffer) < FETCH
        return bool(self.buffer)

    async def peek(self) -> tuple[int | None, bytes | None] | None:
        if not await self.more():
            return None
        row = self.buffer[self.at]
        return row[0], row[1]

    def take(self) -> None:
        self.at += 1


def _id_of(leaf: bytes | None) -> str:
    return str(UUID(bytes=leaf[1:17])) if leaf is not None and len(leaf) >= 17 else "unknown"


class _StreamCheck:
    """One stream, its notes and rows merged (see the module docstring)."""

    def __init__(self, name: str, trusted: list[Verifier], cut: int, copies: dict[str, bool]):
        self.report = StreamReport(name, cut=cut)
        self.trusted = trusted
        self.copies = copies
        self.key: Verifier | None = None
        self.keys: list[Verifier] = []
        self.digest = notes_digest()
        self.digest_known = True  # no note missing since the last key change
        self.seq = -1
        self.range: CompactRange | None = CompactRange() if cut == 0 else None
        self.covered = 0  # the size of the last checkpoint checked
        self.roots: dict[int, bytes] = {}  # the root at each size a checkpoint checked
        self.set_aside: set[int] = set()

    async def run(self, notes: AsyncIterator[Any], rows: _Rows) -> None:
        report = self.report
        try:
            async for seq, size, note, hashes, roots in notes:
                await self._note(seq, size, note, hashes, roots, rows)
            if self.seq < 0:
                raise Failed(
                    "no certificate: rows of a stream no host key began (forged, or "
                    "its notes deleted)"
                )
            if self.range is None:
                raise Failed(f"no checkpoint at the cut, position {report.cut:,}, to start from")
        except Failed as exc:
            report.failures.insert(0, f"stream {report.name}: {exc}")
            report.rows += await _count_rest(rows)
            return
        # The rows after the last checkpoint: unsealed, or (after a clean stop) added. Their
        # roots are kept at the sizes of copies held elsewhere: notes the table never got
        # (the database away when they were signed) still prove the rows they cover.
        wanted = {_size_of(note) for note in self.copies if not self.copies[note]}
        tail = CompactRange(self.range.size, self.range.roots)
        while (row := await rows.peek()) is not None:
            rows.take()
            position, leaf = row
            report.rows += 1
            if position == tail.size and leaf is not None:
                tail.append_hash(hashlib.sha256(b"\x00" + leaf).digest())
                if tail.size in wanted:
                    self.roots[tail.size] = tail.root()
            if position is None or position < self.covered:  # below 0: no stream gives it
                report.fail(f"row ({report.name}, {position}, {_id_of(leaf)}): inserted")
            elif report.stopped:
                report.fail(
                    f"row ({report.name}, {position}, {_id_of(leaf)}): after the clean stop at "
                    f"position {self.covered:,}: inserted"
                )
            else:
                report.unsealed += 1

    async def _note(
        self, seq: int, size: int, note: str, hashes: bytes | None, roots: bytes | None, rows: _Rows
    ) -> None:
        report = self.report
        if note in self.copies:
            self.copies[note] = True
        if seq != self.seq + 1:
            if self.seq < 0:
                raise Failed(f"its certificate (note 0) is missing; its first note is {seq}")
            # Before the checkpoint at a purge's cut, notes are gone on purpose.
            if report.cut == 0 or self.range is not None:
                report.failures.append(
                    f"stream {report.name}: notes {self.seq + 1:,} to {seq - 1:,} of the "
                    "checkpoints table are missing (deleted)"
                )
            self.digest_known = False
        self.seq = seq
        if report.stopped:
            raise Failed(f"note {seq:,} follows the clean stop: added")
        if seq == 0:
            return self._certificate(note)
        text = self._opened(seq, note)
        lines = text.split("\n")
        if len(lines) == 3 and lines[1].startswith("set-aside "):
            return self._set_aside(seq, text, note)
        try:
            body = Checkpoint.parse(text)
        except NoteError as exc:
            raise Failed(f"note {seq:,} is malformed ({exc})") from None
        if body.origin != report.name or body.size != size:
            raise Failed(f"note {seq:,} speaks of {body.size:,} rows of {body.origin}")
        await self._checkpoint(seq, body, hashes or b"", roots, rows)
        if body.next_key is not None:
            known = self.digest_known and body.size > report.cut
            if known and body.records != self.digest.digest():
                raise Failed(
                    f"the notes before the key change (note {seq:,}) are not those its key "
                    "signed (changed, added or removed)"
                )
            self.key = Verifier.parse(body.next_key)
            self.keys.append(self.key)
            self.digest, self.digest_known = notes_digest(), True
            report.key_changes += 1
            report.stopped = body.reason == "stop"
        else:
            add_to_digest(self.digest, note)
            report.checkpoints += 1

    def _certificate(self, note: str) -> None:
        try:
            text, _ = open_note(note, self.trusted)
            body = Checkpoint.parse(text)
        except NoteError as exc:
            raise Failed(f"its certificate is signed by no --key given ({exc})") from None
        if body.origin != self.report.name or body.size != 0 or body.reason != "start":
            raise Failed("its certificate is not one (a start of the empty tree of this stream)")
        assert body.next_key is not None
        self.key = Verifier.parse(body.next_key)
        self.keys.append(self.key)

    def _opened(self, seq: int, note: str) -> str:
        if self.key is None or not is_whole(note):
            raise Failed(f"note {seq:,} is damaged")
        try:
            return open_note(note, [self.key])[0]
        except NoteError:
            raise Failed(
                f"note {seq:,} is not signed by the stream's key (a forged or re-made note)"
            ) from None

    def _set_aside(self, seq: int, text: str, note: str) -> None:
        stream, _, position = text.removesuffix("\n").partition("\nset-aside ")
        if stream != self.report.name or not position.isdigit():
            raise Failed(f"note {seq:,} is a malformed set-aside note")
        if text != set_aside_text(stream, int(position)):
            raise Failed(f"note {seq:,} is a malformed set-aside note")
        self.set_aside.add(int(position))
        self.report.set_aside.append(int(position))
        add_to_digest(self.digest, note)

    async def _checkpoint(
        self, seq: int, body: Checkpoint, hashes: bytes, roots: bytes | None, rows: _Rows
    ) -> None:
        report = self.report
        if self.range is None:
            # After a purge: the checkpoint at the cut gives the range to start from.
            if body.size < report.cut:
                return
            if body.size > report.cut or not roots or len(roots) % 32:
                raise Failed(f"no checkpoint with its range at the cut, position {report.cut:,}")
            found = [roots[at : at + 32] for at in range(0, len(roots), 32)]
            if bin(body.size).count("1") != len(found) or fold_roots(found) != body.root:
                raise Failed(f"the range at the cut (note {seq:,}) does not fold to its root")
            self.range = CompactRange(body.size, found)
            self.covered = report.sealed = body.size
            self.roots[body.size] = body.root
            await _skip_before(rows, body.size, report)
            return
        if body.size < self.covered:
            raise Failed(f"note {seq:,} goes back to {body.size:,} rows from {self.covered:,}")
        count = body.size - self.covered
        if len(hashes) != 32 * count:
            raise Failed(
                f"note {seq:,}: its leaf hashes are not those of positions {self.covered:,} to "
                f"{body.size - 1:,} (the checkpoints table was changed)"
            )
        folded = CompactRange(self.range.size, self.range.roots)
        folded.extend(hashes)
        if folded.root() != body.root:
            raise Failed(
                f"note {seq:,}: its leaf hashes do not fold to the root it signs (the "
                "checkpoints table was changed)"
            )
        await self._rows_against(hashes, rows)
        self.range, self.covered, report.sealed = folded, body.size, body.size
        self.roots[body.size] = body.root

    async def _rows_against(self, hashes: bytes, rows: _Rows) -> None:
        # The hot loop: a batch of rows at a time, no await per row.
        report, sha256 = self.report, hashlib.sha256
        base, position, end = self.covered, self.covered, self.covered + len(hashes) // 32
        while position < end:
            if not await rows.more():
                for missing in range(position, end):
                    if missing not in self.set_aside:
                        report.fail(f"row ({report.name}, {missing}, id unknown): deleted")
                return
            buffer, at, count = rows.buffer, rows.at, len(rows.buffer)
            while position < end and at < count:
                found, leaf = buffer[at]
                if found > position:
                    if position not in self.set_aside:
                        report.fail(f"row ({report.name}, {position}, id unknown): deleted")
                    position += 1
                    continue
                at += 1
                report.rows += 1
                if found < position:  # only a position below 0 comes before the next
                    report.fail(f"row ({report.name}, {found}, {_id_of(leaf)}): inserted")
                    continue
                offset = (position - base) * 32
                if leaf is None or sha256(b"\x00" + leaf).digest() != hashes[offset : offset + 32]:
                    report.fail(
                        f"row ({report.name}, {position}, {_id_of(leaf)}): not the row sealed "
                        "(changed, or put in another's place)"
                    )
                position += 1
            rows.at = at


def _size_of(note: str) -> int:
    """The size a note speaks of, read without checking it (-1: none)."""
    lines = note.split("\n", 2)
    if len(lines) < 3 or not (lines[1].isascii() and lines[1].isdigit()) or len(lines[1]) > 19:
        return -1
    return int(lines[1])


def _parsed(text: str) -> Checkpoint | None:
    try:
        return Checkpoint.parse(text)
    except NoteError:
        return None


async def _skip_before(rows: _Rows, cut: int, report: StreamReport) -> None:
    # A purge deletes every row before its cut: one left there cannot be checked, and an
    # unsigned cut mark must not hide it (a purge cut short: run it again).
    while (row := await rows.peek()) is not None and row[0] is not None and row[0] < cut:
        rows.take()
        report.rows += 1
        report.fail(
            f"row ({report.name}, {row[0]}, {_id_of(row[1])}): before the cut at position "
            f"{cut:,}, so not checked (a purge cut short: run it again; or a cut mark added)"
        )


async def _count_rest(rows: _Rows) -> int:
    count = 0
    while await rows.peek() is not None:
        rows.take()
        count += 1
    return count


async def _cursor(connection: Any, sql: str, *args: Any) -> AsyncIterator[Any]:
    async for row in connection.cursor(sql, *args, prefetch=1000):
        yield row


async def verify_table(
    connection: Any,
    table: str,
    trusted: list[Verifier],
    copies: list[str] = (),  # type: ignore[assignment]
) -> TableReport:
    """Verify the sealed ``table`` (see the module docstring) on ``connection``."""
    report = TableReport()
    held = _Copies.of(list(copies))
    rows_name, notes_name = quoted(table), quoted(checkpoints_table(table))
    rows_sql = (
        f"SELECT position, {LEAF_SQL} FROM {rows_name} "
        "WHERE stream = $1 AND position IS NOT NULL ORDER BY position"
    )
    notes_sql = (
        f"SELECT seq, size, note, hashes, roots FROM {notes_name} "
        "WHERE stream = $1 AND seq >= 0 ORDER BY seq"
    )
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        streams = [
            row[0]
            for row in await connection.fetch(
                f"SELECT stream FROM {notes_name} UNION SELECT DISTINCT stream FROM {rows_name} "
                "WHERE stream IS NOT NULL ORDER BY 1"
            )
        ]
        cuts = {
            row[0]: row[1]
            for row in await connection.fetch(
                f"SELECT stream, max(size) FROM {notes_name} WHERE seq < 0 GROUP BY stream"
            )
        }
        for name in streams:
            check = _StreamCheck(name, trusted, cuts.get(name, 0), held.by_stream.get(name, {}))
            note_cursor = _cursor(connection, notes_sql, name)
            try:
                rows = _Rows(await connection.cursor(rows_sql, name))
                await check.run(note_cursor, rows)
            finally:
                await note_cursor.aclose()
            report.streams.append(check.report)
            _check_copies(check, report)
        loose = await connection.fetch(
            f"SELECT id FROM {rows_name} WHERE stream IS NULL OR position IS NULL LIMIT $1", NAMED
        )
        if loose:
            count = await connection.fetchval(
                f"SELECT count(*) FROM {rows_name} WHERE stream IS NULL OR position IS NULL"
            )
            ids = ", ".join(str(row[0]) for row in loose)
            report.failures.append(
                f"{count:,} row(s) belong to no stream, so nothing seals them (written before "
                f"the table was sealed, or inserted by hand): ids {ids}"
                + (", ..." if count > len(loose) else "")
            )
    for name, notes in held.by_stream.items():
        if name not in streams:
            report.failures.append(
                f"{len(notes):,} checkpoint(s) held elsewhere are of a stream the table does not "
                f"have at all: {name} (its rows and notes deleted?)"
            )
    if held.unreadable:
        report.failures.append(f"{held.unreadable:,} checkpoint(s) held elsewhere are unreadable")
    return report


def _check_copies(check: _StreamCheck, report: TableReport) -> None:
    stream = check.report
    missing = [note for note, found in check.copies.items() if not found]
    report.external += len(check.copies) - len(missing)
    # The copies' own key changes extend the chain: the table may have lost the last ones.
    known, opened = check.keys + check.trusted, {}
    grew = True
    while grew:
        grew = False
        for note in missing:
            if note in opened:
                continue
            try:
                opened[note] = open_note(note, known)[0]
            except NoteError:
                continue
            with_key = _parsed(opened[note])
            if with_key is not None and with_key.next_key is not None:
                known.append(Verifier.parse(with_key.next_key))
                grew = True
    stopped_at = -1
    for note in sorted(missing, key=_size_of):
        if note not in opened:
            report.failures.append(
                f"stream {stream.name}: a checkpoint held elsewhere is signed by no key of its "
                "chain (or is damaged)"
            )
            continue
        body = _parsed(opened[note])
        size = -1 if body is None else body.size  # -1: a set-aside note
        if 0 <= size < stream.cut:
            report.before_cut += 1
            continue
        if body is not None and check.roots.get(size) == body.root:
            # A note the table never got (the database away when it was signed): the rows
            # it covers are as it says.
            report.external += 1
            if size > stream.sealed:
                stream.unsealed -= size - stream.sealed
                stream.sealed = size
            if body.reason == "stop":
                stopped_at = max(stopped_at, size)
            continue
        what = f"{size:,} rows" if size >= 0 else "a set-aside note"
        stream.failures.append(
            f"stream {stream.name}: a checkpoint held elsewhere ({what}) is not in the "
            "checkpoints table: its newest rows were deleted with their checkpoints, or the "
            "table was changed"
        )
    if stopped_at >= 0:  # a clean stop held elsewhere: nothing may follow it
        stream.stopped = True
        if stream.unsealed:
            stream.failures.append(
                f"stream {stream.name}: {stream.unsealed:,} row(s) after the clean stop at "
                f"position {stopped_at:,} held elsewhere: inserted"
            )
            stream.unsealed = 0
