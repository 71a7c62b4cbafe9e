"""Checking the log: every acknowledged login written exactly once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quart_app.records import parse_line

EXAMPLES = 5
"""How many missing or doubled usernames a result names, to start looking from."""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """How the log matches the logins the server acknowledged (answered 200).

    ``unacknowledged_logged`` counts this run's usernames that are in the log
    without having been acknowledged: a login whose answer was lost on the way
    back may well have been logged, so that is no fault.
    """

    acknowledged: int
    logged_once: int
    missing: int
    doubled: int
    unacknowledged_logged: int
    waited_s: float
    missing_examples: tuple[str, ...]
    doubled_examples: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether logins were acknowledged and each of them is in the log exactly once.

        Nothing acknowledged (server down, every login refused) is a failure:
        there was nothing to check, so nothing was shown to work.
        """
        return self.acknowledged > 0 and self.missing == 0 and self.doubled == 0

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-able values."""
        return {
            "ok": self.ok,
            "acknowledged": self.acknowledged,
            "logged_once": self.logged_once,
            "missing": self.missing,
            "doubled": self.doubled,
            "unacknowledged_logged": self.unacknowledged_logged,
            "waited_s": round(self.waited_s, 3),
            "missing_examples": list(self.missing_examples),
            "doubled_examples": list(self.doubled_examples),
        }


class _LogReader:
    """Reads the lines appended to a log since the last call, whole lines only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def new_usernames(self) -> list[str]:
        """The usernames of the complete lines added since the last call."""
        try:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:  # the writer has not created it yet
            return []
        self._offset += len(data)
        # A line still being written stays behind until its newline arrives.
        *lines, self._partial = (self._partial + data).split(b"\n")
        usernames = []
        for line in lines:
            try:
                usernames.append(parse_line(line.decode()).username)
            except ValueError:  # not a login line (UnicodeDecodeError is one too)
                continue
        return usernames


async def verify_log(
    path: str | Path,
    acknowledged: Iterable[str],
    *,
    run_prefix: str | None = None,
    max_wait: float = 10.0,
    poll_interval: float = 0.05,
) -> VerifyResult:
    """Check that each ``acknowledged`` username is in the log at ``path`` exactly once.

    The log (text or JSON Lines) is polled until every acknowledged username is
    in it or ``max_wait`` seconds have passed, since the writer may lag behind
    the answers. Lines of usernames not acknowledged are ignored, except those
    starting with ``run_prefix``, which are counted as ``unacknowledged_logged``.
    """
    expected = set(acknowledged)
    reader = _LogReader(Path(path))
    counts: Counter[str] = Counter()
    unacknowledged: set[str] = set()
    present = 0
    started = time.monotonic()
    deadline = started + max_wait
    while True:
        # In a thread: the log may be large, and the caller's loop may be busy.
        for username in await asyncio.to_thread(reader.new_usernames):
            if username in expected:
                counts[username] += 1
                present += counts[username] == 1
            elif run_prefix is not None and username.startswith(run_prefix):
                unacknowledged.add(username)
        if present == len(expected) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(poll_interval)
    missing = sorted(expected - counts.keys())
    doubled = sorted(name for name, count in counts.items() if count > 1)
    return VerifyResult(
        acknowledged=len(expected),
        logged_once=present - len(doubled),
        missing=len(missing),
        doubled=len(doubled),
        unacknowledged_logged=len(unacknowledged),
        waited_s=time.monotonic() - started,
        missing_examples=tuple(missing[:EXAMPLES]),
        doubled_examples=tuple(doubled[:EXAMPLES]),
    )
