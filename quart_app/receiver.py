"""The audit receiver: turns an app's ``login`` signal into a record for its writer."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from quart import request

from .proxy import unmapped
from .records import LoginRecord
from .signals import login_signal
from .writer import LogWriter

Receiver = Callable[..., Coroutine[Any, Any, None]]
# The first character of an IPv4 or IPv6 address as servers give them.
_ADDRESS_START = frozenset("0123456789abcdefABCDEF:")


def connect_audit_receiver(app: object, writer: LogWriter) -> Receiver:
    """Connect a receiver that logs ``app``'s logins (and only its own) to ``writer``.

    The signal holds the receiver strongly and is its only owner: blinker's
    default weak reference would let it be garbage collected at once, and
    logins would stop being logged without a word. It is disconnected when
    ``app`` is collected (blinker alone would forget the sender but keep the
    receiver, and with it the writer); nothing it holds refers to ``app``, so
    that can happen.
    """

    unknown_address = writer.metrics.client_address_unknown
    offer = writer.offer
    new_record = tuple.__new__

    async def audit_login(sender: object, *, username: str, **_: Any) -> None:
        # Everything is captured now, in the request: the request is gone by
        # the time the record is written, and the time is that of the login.
        # The proxy resolved once: each access through it costs a lookup. Outside
        # a request login_signal.send_async has raised OutsideRequest already.
        req = request._get_current_object()  # type: ignore[attr-defined]
        ip = req.remote_addr
        if not ip or ip[0] not in _ADDRESS_START:
            # None (a Unix socket), "-" (a trusted header gave no address), or
            # a test client's "<local>": no address to log.
            ip = "-"
            unknown_address.inc()
        elif ip.startswith("::ffff:"):
            ip = unmapped(ip)
        # tuple.__new__ directly: the NamedTuple's own __new__ is a Python call.
        record = new_record(LoginRecord, (username, datetime.now(UTC), ip))
        if not offer(record):  # the queue is full, or durable: wait for it
            await writer.submit(record)

    login_signal.connect(audit_login, sender=app, weak=False)
    weakref.finalize(app, login_signal.disconnect, audit_login)
    return audit_login
