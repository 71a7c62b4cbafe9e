"""The audit receiver: turns a ``login`` signal into a record for the writer."""

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


def connect_audit_receiver(app: object, writer: LogWriter) -> Receiver:
    """Connect a receiver that logs ``app``'s logins (and only its own) to ``writer``.

    The signal holds the receiver strongly and is its only owner: blinker's
    default weak reference would let it be garbage collected at once, and
    logins would stop being logged without a word. It is disconnected, by its
    id, when ``app`` is collected (blinker alone would forget the sender but
    keep the receiver, and with it the writer); nothing it holds refers to
    ``app``, so that can happen.
    """

    unknown_address = writer.metrics.client_address_unknown

    async def audit_login(sender: object, *, username: str, **_: Any) -> None:
        # Everything is captured now, in the request: the request is gone by
        # the time the record is written, and the time is that of the login.
        ip = request.remote_addr or "-"
        if ip == "-":  # a trusted proxy header gave no valid address
            unknown_address.inc()
        await writer.submit(LoginRecord(username, datetime.now(UTC), ip))

    login_signal.connect(audit_login, sender=app, weak=False)
    weakref.finalize(app, login_signal.disconnect, id(audit_login))
    return audit_login
