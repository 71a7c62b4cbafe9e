"""``purge --before T`` on a sealed table: each stream cut at a checkpointed position.

A stream's rows are deleted up to the last checkpoint whose rows are all older
than T (later rows stay, a few more than asked perhaps: a cut anywhere else
could not be verified). Before any row goes, a mark ``cut N`` is inserted in
the checkpoints table (``seq`` below 0, unsigned: where ``verify`` starts,
from the checkpoint at N and its range, and says so). Then the rows, and the
checkpoints before the cut (not the certificate, nor the key changes: the
chain of keys stays whole). Rows of no stream go by their time, as in a
table that is not sealed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..stores.pg_table import checkpoints_table, quoted
from .table_verify import CUT_PREFIX


@dataclass(frozen=True, slots=True)
class Cut:
    """Where one stream is cut, and how many of its rows go."""

    stream: str
    position: int
    rows: int


async def is_sealed(connection: Any, table: str) -> bool:
    """Whether ``table`` is sealed: it has a ``stream`` column and a checkpoints table."""
    found = await connection.fetchval(
        "SELECT to_regclass($1) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_attribute WHERE "
        "attrelid = to_regclass($2) AND attname = 'stream' AND NOT attisdropped)",
        quoted(checkpoints_table(table)),
        quoted(table),
    )
    return bool(found)


async def plan(connection: Any, table: str, before: datetime) -> tuple[list[Cut], int]:
    """The cuts a purge of the rows older than ``before`` makes, and the rows of no stream
    it deletes."""
    rows, notes = quoted(table), quoted(checkpoints_table(table))
    cuts = []
    for (stream,) in await connection.fetch(f"SELECT DISTINCT stream FROM {notes} ORDER BY 1"):
        first_new = await connection.fetchval(
            f"SELECT min(position) FROM {rows} WHERE stream = $1 AND logged_in_at >= $2",
            stream,
            before,
        )
        # The last checkpoint (with its range) whose rows are all older than T.
        position = await connection.fetchval(
            f"SELECT max(size) FROM {notes} WHERE stream = $1 AND seq > 0 "
            "AND roots IS NOT NULL AND ($2::int8 IS NULL OR size <= $2)",
            stream,
            first_new,
        )
        done = await connection.fetchval(
            f"SELECT coalesce(max(size), 0) FROM {notes} WHERE stream = $1 AND seq < 0", stream
        )
        if position is None or position < done:
            position = done  # a purge cut short before: finished at its own cut
        if not position:
            continue
        count = await connection.fetchval(
            f"SELECT count(*) FROM {rows} WHERE stream = $1 AND position < $2", stream, position
        )
        if position > done or count:
            cuts.append(Cut(stream, position, count))
    loose = await connection.fetchval(
        f"SELECT count(*) FROM {rows} WHERE stream IS NULL AND logged_in_at < $1", before
    )
    return cuts, int(loose)


async def purge(connection: Any, table: str, cuts: list[Cut], before: datetime, batch: int) -> int:
    """Make ``cuts`` (the mark first, then the rows, then the checkpoints before the cut), and
    delete the rows of no stream older than ``before``; return the rows deleted."""
    rows, notes = quoted(table), quoted(checkpoints_table(table))
    deleted = 0
    for cut in cuts:
        await connection.execute(
            f"INSERT INTO {notes} (stream, seq, size, note) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING",
            cut.stream,
            -1 - cut.position,
            cut.position,
            f"{CUT_PREFIX}{cut.position} (purge --before {before.isoformat()})\n",
        )
        deleted += await _in_batches(
            connection,
            f"DELETE FROM {rows} WHERE id IN (SELECT id FROM {rows} "
            "WHERE stream = $1 AND position < $2 LIMIT $3)",
            batch,
            cut.stream,
            cut.position,
        )
        # Checkpoints and set-aside notes before the cut; the one at it stays (its range).
        await connection.execute(
            f"DELETE FROM {notes} WHERE stream = $1 AND seq > 0 AND size < $2 "
            "AND strpos(note, E'\\nreason ') = 0",
            cut.stream,
            cut.position,
        )
    deleted += await _in_batches(
        connection,
        f"DELETE FROM {rows} WHERE id IN (SELECT id FROM {rows} "
        "WHERE stream IS NULL AND logged_in_at < $1 LIMIT $2)",
        batch,
        before,
    )
    return deleted


async def _in_batches(connection: Any, sql: str, batch: int, *args: Any) -> int:
    # Short transactions, resting twice as long as each took (as the plain purge does).
    deleted = 0
    while True:
        started = time.monotonic()
        count = int((await connection.execute(sql, *args, batch)).rsplit(" ", 1)[1])
        deleted += count
        if count < batch:
            return deleted
        await asyncio.sleep(2 * (time.monotonic() - started))
