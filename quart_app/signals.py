"""The ``login`` signal, as in the Flask original, plus how it is sent.

Receivers are called with the app as sender and ``username`` as a keyword::

    from quart_app.signals import login_signal

    @login_signal.connect_via(app)
    async def on_login(sender, *, username: str) -> None: ...

Both async and plain functions may be connected; plain functions run inline on
the event loop (see :func:`send_login`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from blinker import Namespace

namespace = Namespace()

login_signal = namespace.signal("login")
"""Sent once per accepted login, with the app as sender and ``username=``."""


def _call_inline(func: Callable[..., Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
    # Quart's own signals push sync receivers to a thread per call; for a
    # receiver that does microseconds of work the thread hop costs far more
    # than the work, and it loses the request context. Call it on the loop.
    async def call(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return call


async def send_login(app: object, username: str) -> None:
    """Send :data:`login_signal` for ``username`` with ``app`` as the sender.

    Exceptions from receivers propagate, so a receiver can refuse a login
    (the audit receiver does so when the log cannot take the record).
    """
    await login_signal.send_async(app, _sync_wrapper=_call_inline, username=username)
