"""The writer alone: records into a file, against one write per line, in one process."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiofiles

from quart_app.loadtest import run_uvloop
from quart_app.records import LoginRecord, format_text
from quart_app.stores.file import FileStore
from quart_app.writer import LogWriter


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


async def _log_writer(path: Path, records: list[LoginRecord]) -> float:
    # The writer formats the lines itself, in its thread: that is timed.
    writer = LogWriter(FileStore(str(path)))
    await writer.start()  # opening the file is not timed, for none of the three
    start = time.perf_counter()
    for record in records:
        await writer.submit(record)
    await writer.stop()
    elapsed = time.perf_counter() - start
    if writer.written != len(records):
        raise RuntimeError(f"LogWriter wrote {writer.written} of {len(records)} records")
    return elapsed


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


def run_writers(
    workdir: Path, *, rounds: int, records: int, aiofiles_records: int, say: Callable[[str], None]
) -> list[WriterMeasurement]:
    """Time every writer, interleaved round by round, each into a fresh file, on uvloop."""
    many = make_records(records)
    out = []
    for round_no in range(1, rounds + 1):
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
