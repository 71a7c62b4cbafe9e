"""A log file as a test reads it: its records, once there are enough, and who holds its lock."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from quart_app.records import LoginRecord
from quart_app.trail import Bad, Found, Query, read_file


def read_records(path: Path) -> list[LoginRecord]:
    """Every line of the log, read as ``quart-app-log`` reads it; a malformed or torn line
    fails the test."""
    if not path.exists():
        return []
    found = list(read_file(str(path), Query()))
    if bad := [item for item in found if isinstance(item, Bad)]:
        raise ValueError(f"lines that are no login record: {bad[:5]}")
    return [item.record for item in found if isinstance(item, Found)]


async def wait_for_records(path: Path, count: int, timeout: float = 10) -> list[LoginRecord]:
    """The log's records once it holds at least ``count`` of them.

    A batch being written may be read half-way (a reader is not atomic with
    ``write(2)``): until then only whole lines count, and the last read must be whole.
    """
    async with asyncio.timeout(timeout):
        while _whole_lines(path) < count:
            await asyncio.sleep(0.01)
    return read_records(path)


def _whole_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def flock_pids(path: Path) -> tuple[set[int], set[int]]:
    """The pids holding, and those waiting for, a ``flock`` on ``path`` (from ``/proc/locks``)."""
    st = os.stat(path)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders: set[int] = set()
    waiters: set[int] = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        waiting = fields[1] == "->"
        kind, pid, file = fields[1 + waiting], fields[4 + waiting], fields[5 + waiting]
        if kind == "FLOCK" and file == key:
            (waiters if waiting else holders).add(int(pid))
    return holders, waiters
