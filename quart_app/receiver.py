"""The audit receiver: turns a ``login`` signal into a queued log record."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from quart import request

from .records import LoginRecord
from .signals import login_signal
from .writer import LogWriter

Receiver = Callable[..., Coroutine[Any, Any, None]]


def connect_audit_receiver(
    app: object, writer: LogWriter, formatter: Callable[[LoginRecord], bytes]
) -> Receiver:
    """Connect a receiver that logs ``app``'s logins (and only its own) to ``writer``.

    It is connected strongly: blinker's default weak reference would let a
    receiver with no other owner be garbage collected, and logins would stop
    being logged without a word. It is disconnected when ``app`` is collected
    (blinker alone would forget the sender but keep the receiver, and with it
    the writer); it holds no reference to ``app``, so that can happen.
    """

    async def audit_login(sender: object, *, username: str, **_: Any) -> None:
        # Everything is captured now, in the request: the request is gone by
        # the time the line is written, and the time is that of the login.
        record = LoginRecord(username, datetime.now(UTC), request.remote_addr or "-")
        await writer.submit(formatter(record))

    login_signal.connect(audit_login, sender=app, weak=False)
    weakref.finalize(app, login_signal.disconnect, audit_login)
    return audit_login
