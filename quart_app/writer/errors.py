"""How the writer refuses a login, and how it words an error for the public and the log."""

from __future__ import annotations

import asyncio
from typing import Any


class LogUnavailable(Exception):
    """The record was not confirmed; the login must not be acknowledged."""


class LogFull(LogUnavailable):
    """Too many records are waiting and no room came up in time."""


def describe_error(exc: BaseException) -> str:
    """An error's type and reason, safe to show anyone (``/healthz``).

    Without the file name an ``OSError`` may carry, and of a database error
    only its SQLSTATE: its message may name a role, a database or a value.
    """
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return f"{type(exc).__name__} (SQLSTATE {sqlstate})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def one_line(text: str) -> str:
    """``text`` with every character that is not printable escaped: one line of the log."""
    # A database's message may quote a row, and a username can hold a line
    # break: the operator's log gets one line per error, never a forged one.
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def refuse(future: asyncio.Future[Any] | None, reason: str) -> None:
    """Fail the logins waiting on ``future`` (503), if it is still open."""
    if future is not None and not future.done():
        future.set_exception(LogUnavailable(reason))
        future.exception()  # retrieved here: every waiter may have given up already
