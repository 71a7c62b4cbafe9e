"""Where ``--verify`` reads the logged usernames from: the login log file.

A source is anything with an async ``new_usernames()``. The counting in
:mod:`.verify` only sees usernames, so another store (a database table the
logins are written to) can be read by a source of its own beside
:class:`LogFile`, and :func:`open_source` can pick it from its address.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol, runtime_checkable

from quart_app.records import parse_line


@runtime_checkable
class LoginSource(Protocol):
    """Logged usernames, read a batch at a time."""

    async def new_usernames(self) -> list[str]:
        """The usernames logged since the last call: all of them on the first call.

        An empty list means nothing new for now; the writer may add more later.
        """
        ...


class LogFile:
    """A login log file, text or JSON Lines, read from where the last call stopped.

    A line still being written is left for the next call, and lines that are
    not login records are skipped.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    async def new_usernames(self) -> list[str]:
        """The usernames of the complete lines added since the last call."""
        # In a thread: the log may be large, and the caller's loop may be busy.
        return await asyncio.to_thread(self._read)

    def _read(self) -> list[str]:
        try:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:  # the writer has not created it yet
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        usernames = []
        for line in lines:
            try:
                usernames.append(parse_line(line.decode()).username)
            except ValueError:  # not a login line (UnicodeDecodeError is one too)
                continue
        return usernames


def open_source(where: str | Path | LoginSource) -> LoginSource:
    """``where`` as a source: a source as it is, anything else as a log file's path."""
    if isinstance(where, LoginSource):
        return where
    return LogFile(where)
