"""The writer alone: records into a file, against one write per line, in one process."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiofiles

from quart_app.records import LoginRecord, format_text
from quart_app.stores.file import FileStore
from quart_app.stores.pg_table import create_table_sql, insert_sql
from quart_app.stores.postgres import PostgresStore, new_ids
from quart_app.tools.loadtest import run_uvloop
from quart_app.writer import MAX_BATCH, LogWriter


@dataclass
class WriterMeasurement:
    """One writer run: how many records, how long."""

    writer: str
    round: int
    records: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Records per second."""
        return self.records / self.seconds


def make_records(count: int) -> list[LoginRecord]:
    """``count`` distinct records."""
    start = datetime.now(UTC)
    return [
        LoginRecord(f"bench-user-{i}", start + timedelta(microseconds=i), "127.0.0.1")
        for i in range(count)
    ]


async def _timed(writer: LogWriter, records: list[LoginRecord]) -> float:
    # Opening the store (the file, the connection and table) is not timed.
    await writer.start()
    start = time.perf_counter()
    for record in records:
        await writer.submit(record)
    await writer.stop()
    elapsed = time.perf_counter() - start
    if writer.written != len(records):
        raise RuntimeError(f"LogWriter wrote {writer.written} of {len(records)} records")
    return elapsed


async def _log_writer(path: Path, records: list[LoginRecord]) -> float:
    # The writer formats the lines itself, in its thread: that is timed.
    return await _timed(LogWriter(FileStore(str(path))), records)


async def _aiofiles_per_line(path: Path, records: list[LoginRecord]) -> float:
    # buffering=0, as FileStore: each line is its own write(2), like os.write.
    async with aiofiles.open(path, "ab", buffering=0) as file:
        start = time.perf_counter()
        for record in records:
            await file.write(format_text(record))
    return time.perf_counter() - start


async def _os_write_per_line(path: Path, records: list[LoginRecord]) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        start = time.perf_counter()
        for record in records:
            os.write(fd, format_text(record))
    finally:
        os.close(fd)
    return time.perf_counter() - start


RUNS: dict[str, Callable[[Path, list[LoginRecord]], Awaitable[float]]] = {
    "LogWriter": _log_writer,
    "os.write": _os_write_per_line,
    "aiofiles": _aiofiles_per_line,
}


async def _log_writer_pg(url: str, table: str, records: list[LoginRecord]) -> float:
    return await _timed(LogWriter(PostgresStore(url, table=table, host="bench")), records)


async def _unnest_insert(url: str, table: str, records: list[LoginRecord]) -> float:
    # The ceiling: the store's own statement on the batches the writer makes.
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(create_table_sql(table))
        sql, size = insert_sql(table), MAX_BATCH
        start = time.perf_counter()
        for first in range(0, len(records), size):
            batch = records[first : first + size]
            usernames = [record.username for record in batch]
            times = [record.time for record in batch]
            ips = [record.ip for record in batch]
            await connection.execute(sql, new_ids(len(batch)), usernames, times, ips, "bench")
        return time.perf_counter() - start
    finally:
        await connection.close()


DATABASE_RUNS: dict[str, Callable[[str, str, list[LoginRecord]], Awaitable[float]]] = {
    "LogWriter pg": _log_writer_pg,
    "unnest insert": _unnest_insert,
}


def run_writers(
    workdir: Path,
    *,
    rounds: int,
    records: int,
    aiofiles_records: int,
    database_url: str | None,
    say: Callable[[str], None],
) -> list[WriterMeasurement]:
    """Time every writer, interleaved round by round, each into a fresh file or table, on uvloop.

    The PostgreSQL pair runs only with ``database_url``.
    """
    many = make_records(records)
    out = []
    for round_no in range(1, rounds + 1):
        if database_url is not None:
            for name, run_pg in DATABASE_RUNS.items():
                table = f"bench_writer_{name.split()[-1]}_{round_no}"
                seconds = run_uvloop(run_pg(database_url, table, many))
                out.append(WriterMeasurement(name, round_no, len(many), seconds))
                say(
                    f"  round {round_no}/{rounds} {name:<13} {len(many):>7} rows "
                    f"in {seconds:6.3f} s = {len(many) / seconds:>10,.0f} rows/s"
                )
        for name, run in RUNS.items():
            batch = many[:aiofiles_records] if name == "aiofiles" else many
            path = workdir / f"writer-{name}.log"
            path.unlink(missing_ok=True)
            seconds = run_uvloop(run(path, batch))
            expected = sum(len(format_text(r)) for r in batch)
            if path.stat().st_size != expected:
                raise RuntimeError(f"{name} wrote {path.stat().st_size} bytes, not {expected}")
            path.unlink()
            out.append(WriterMeasurement(name, round_no, len(batch), seconds))
            say(
                f"  round {round_no}/{rounds} {name:<10} {len(batch):>7} records "
                f"in {seconds:6.3f} s = {len(batch) / seconds:>10,.0f} records/s"
            )
    return out
