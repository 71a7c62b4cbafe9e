"""The ``login`` signal, as in the Flask original, plus how it is sent.

Receivers are called with the app as sender and ``username`` as a keyword::

    from quart_app.signals import login_signal

    @login_signal.connect_via(app)
    async def on_login(sender, *, username: str) -> None: ...

Both async and plain functions may be connected; plain functions run inline on
the event loop (see :func:`send_login`).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Hashable
from typing import Any

from blinker import ANY, NamedSignal, Namespace

namespace = Namespace()


class LoginSignal(NamedSignal):
    """blinker's signal, keeping each sender's receivers from one send to the next.

    blinker works out the receivers of a sender on every send (ids, a set
    union, weak references, which are coroutine functions): on the login
    route that was a third of what logging costs. They are kept here until a
    receiver connects or disconnects, a weakly held one is collected, or the
    sender is; blinker's behaviour is otherwise unchanged.
    """

    def __init__(self, name: str, doc: str | None = None) -> None:
        super().__init__(name, doc)
        # id(sender) -> (a weak reference to the sender, [(receiver or weak
        # reference to it, whether it is one, whether it is a coroutine function)])
        self._kept: dict[int, tuple[Any, list[tuple[Any, bool, bool]]]] = {}

    def connect(self, receiver: Callable[..., Any], sender: Any = ANY, weak: bool = True) -> Any:
        """As blinker's :meth:`~blinker.Signal.connect`."""
        self._kept.clear()
        return super().connect(receiver, sender, weak)

    def _disconnect(self, receiver_id: Hashable, sender_id: Hashable) -> None:
        # Every way a receiver leaves comes through here, collected ones too.
        self._kept.clear()
        super()._disconnect(receiver_id, sender_id)

    def receivers_of(self, sender: Any) -> list[tuple[Callable[..., Any], bool]]:
        """``sender``'s receivers (and ANY's), each with whether it is a coroutine function."""
        kept = self._kept.get(id(sender))
        if kept is not None and kept[0]() is sender:
            receivers = []
            for stored, is_ref, is_coroutine in kept[1]:
                receiver = stored() if is_ref else stored
                if receiver is None:  # collected since: blinker cleans up below
                    break
                receivers.append((receiver, is_coroutine))
            else:
                return receivers
        return self._keep(sender)

    def _keep(self, sender: Any) -> list[tuple[Callable[..., Any], bool]]:
        receivers = [(r, inspect.iscoroutinefunction(r)) for r in self.receivers_for(sender)]
        try:
            sender_ref = weakref.ref(sender)
        except TypeError:  # cannot tell when it goes: not kept
            return receivers
        stored = []
        for receiver, is_coroutine in receivers:
            held = self.receivers.get(_receiver_id(receiver))
            is_ref = isinstance(held, weakref.ref)
            stored.append((held if is_ref else receiver, is_ref, is_coroutine))
        self._kept[id(sender)] = (sender_ref, stored)
        return receivers


def _receiver_id(receiver: Callable[..., Any]) -> Hashable:
    # As blinker's make_id.
    if inspect.ismethod(receiver):
        return id(receiver.__func__), id(receiver.__self__)
    return id(receiver)


login_signal = LoginSignal("login", "Sent once per accepted login, with the app as sender.")
"""Sent once per accepted login, with the app as sender and ``username=``."""
namespace["login"] = login_signal


async def send_login(app: object, username: str) -> None:
    """Send :data:`login_signal` for ``username`` with ``app`` as the sender.

    Coroutine functions are awaited; plain functions are called inline on the
    event loop, not in a thread per call as Quart's own signals do: for a
    receiver doing microseconds of work the thread hop costs far more than
    the work, and the request context would be lost. Exceptions from
    receivers propagate, so a receiver can refuse a login (the audit receiver
    does so when the log cannot take the record).
    """
    if login_signal.is_muted:
        return
    for receiver, is_coroutine in login_signal.receivers_of(app):
        if is_coroutine:
            await receiver(app, username=username)
        else:
            receiver(app, username=username)
