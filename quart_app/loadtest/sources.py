"""Where ``--verify`` reads the logged usernames from: the login log file.

A source is anything with an async ``read()`` returning :class:`Logged`. The
counting in :mod:`.verify` only sees usernames (and records it could not
read), so another store (a database table the logins are written to) can be
read by a source of its own beside :class:`LogFile`, and :func:`open_source`
can pick it from its address.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

from quart_app.records import parse_line


class Logged(NamedTuple):
    """What a source read: the usernames of its login records, and records it could not read.

    ``unreadable`` holds, as text, what the store holds that is no login
    record: in a log file, a torn or interleaved line. The server writes
    nothing else, so each is a fault.
    """

    usernames: list[str]
    unreadable: list[str]


@runtime_checkable
class LoginSource(Protocol):
    """Logged logins, read a batch at a time."""

    async def read(self) -> Logged:
        """What was logged since the last call: everything on the first call.

        Nothing new for now is an empty batch; the writer may add more later.
        """
        ...


class LogFile:
    """A login log file, text or JSON Lines, read from where the last call stopped.

    A last line without its newline is still being written: it is left for
    the next call.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    async def read(self) -> Logged:
        """The complete lines added since the last call."""
        # In a thread: the log may be large, and the caller's loop may be busy.
        return await asyncio.to_thread(self._read)

    def _read(self) -> Logged:
        try:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:  # the writer has not created it yet
            return Logged([], [])
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        logged = Logged([], [])
        for line in lines:
            try:
                logged.usernames.append(parse_line(line.decode()).username)
            except ValueError:  # UnicodeDecodeError is one too
                logged.unreadable.append(line.decode(errors="replace"))
        return logged


def open_source(where: str | Path | LoginSource) -> LoginSource:
    """``where`` as a source: a source as it is, anything else as a log file's path."""
    if isinstance(where, LoginSource):
        return where
    return LogFile(where)
