"""The ``login`` signal, as in the Flask original: sent once per login, the app as sender.

Send it with blinker's own API, from the request that logs someone in::

    await login_signal.send_async(app, username="张三")

and connect receivers the same way (``login_signal.connect(receiver, sender=app)``).
What sets it apart from a plain blinker signal is all in :meth:`LoginSignal.send_async`:

* the username is checked before any receiver runs (:func:`~quart_app.inputs.check_username`):
  a name the audit would refuse raises :class:`~quart_app.inputs.BadUsername` (a 400) and
  no receiver ever sees it;
* a proxy such as ``current_app`` is sent as the app it stands for: blinker files a
  sender under its identity, and would call no receiver of the app for the proxy;
* a login sent outside a request raises :class:`OutsideRequest`, and one that would not
  be recorded :class:`LookupError`, before any receiver runs: sent by anything but an app
  :class:`~quart_app.LoginAudit` set up (a blueprint, ``None``), by another app than the
  one handling the request (its line would be in the wrong log), or while the signal is
  muted; the synchronous ``send`` raises :class:`TypeError`.

Plain (not async) receivers are called inline on the event loop unless a
``_sync_wrapper`` is given: a receiver doing microseconds of work should not pay a
thread hop, and keeps the request context. What they return is awaited if it can be
(an object with an ``async def __call__``).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

from blinker import ANY, NamedSignal, Namespace
from quart import current_app, has_request_context
from werkzeug.local import LocalProxy

from .inputs import DEFAULT_MAX_LENGTH, check_username
from .state import KEY

namespace = Namespace()


class OutsideRequest(RuntimeError):
    """A login was sent outside the request that logs in: no address or time to log."""


OUTSIDE_REQUEST = (
    "a login is recorded from inside the request that logs in "
    "(its client address and time are the login's)"
)

SyncWrapper = Callable[[Callable[..., Any]], Callable[..., Coroutine[Any, Any, Any]]]


class LoginSignal(NamedSignal):
    """blinker's signal, remembering each sender's receivers from one send to the next.

    Working out a sender's receivers on every send is most of what sending
    costs on the login route (bench/README.md). They are kept until a receiver
    connects or disconnects, a weakly held receiver is collected or the sender
    is: blinker's documented ``receiver_connected`` and ``receiver_disconnected``
    signals and weak-reference callbacks say when.
    """

    def __init__(self, name: str, doc: str | None = None) -> None:
        super().__init__(name, doc)
        # id(sender) -> (a weak reference to it, [(receiver or a weak reference
        # to it, whether it is one, whether it is a coroutine function)], the
        # longest username its audit takes, or 0 when it has no audit)
        self._kept: dict[int, tuple[weakref.ref[Any], list[tuple[Any, bool, bool]], int]] = {}
        # Weak references to weakly connected receivers, by receiver id.
        self._weak: dict[Hashable, weakref.ref[Any]] = {}
        self.receiver_connected.connect(self._on_connected, weak=False)
        self.receiver_disconnected.connect(self._on_disconnected, weak=False)

    def _on_connected(self, _: Any, *, receiver: Any, weak: bool, **__: Any) -> None:
        self._kept.clear()
        if weak:
            key = _receiver_id(receiver)
            make_ref = weakref.WeakMethod if inspect.ismethod(receiver) else weakref.ref
            self._weak[key] = make_ref(receiver, lambda _: self._forget(key))

    def _on_disconnected(self, _: Any, *, receiver: Any, sender: Any, **__: Any) -> None:
        self._kept.clear()
        if sender is ANY:  # gone for every sender
            self._weak.pop(_receiver_id(receiver), None)

    def _forget(self, key: Hashable) -> None:
        self._weak.pop(key, None)
        self._kept.clear()

    async def send_async(
        self,
        sender: Any | None = None,
        /,
        *,
        _sync_wrapper: SyncWrapper | None = None,
        **kwargs: Any,
    ) -> list[tuple[Callable[..., Any], Any]]:
        """Check ``username=``, then await every receiver of ``sender`` (and of ANY).

        As blinker's :meth:`~blinker.Signal.send_async`, with the differences the
        module says. Raises :class:`~quart_app.inputs.BadUsername` for a refused
        username; exceptions from receivers propagate (the audit receiver raises
        :class:`~quart_app.writer.LogUnavailable` when the log cannot confirm).
        """
        if type(sender) is LocalProxy:
            sender = sender._get_current_object()
        receivers, max_length = self._kept_for(sender)
        try:
            kwargs["username"] = check_username(
                kwargs["username"], max_length or DEFAULT_MAX_LENGTH
            )
        except KeyError:
            raise TypeError("login_signal is sent with username=") from None
        # A login recorded nowhere, or in another app's log, would let the caller
        # log the user in all the same: refused before any receiver hears it.
        if not max_length:
            raise LookupError(
                f"nothing records logins sent by {sender!r}: send login_signal with the app "
                "LoginAudit set up"
            )
        if not has_request_context():  # a task, a CLI, a WebSocket: no address or time to log
            raise OutsideRequest(OUTSIDE_REQUEST)
        handling = current_app._get_current_object()  # type: ignore[attr-defined]
        if handling is not sender:
            raise LookupError(
                f"login_signal sent by the app {getattr(sender, 'name', sender)!r} while the "
                f"app {handling.name!r} handles the request: send it with the app handling it"
            )
        if self.is_muted:
            raise LookupError("login_signal is muted: the login would be recorded nowhere")
        results = []
        for receiver, is_coroutine in receivers:
            if is_coroutine:
                result = await receiver(sender, **kwargs)
            elif _sync_wrapper is not None:
                result = await _sync_wrapper(receiver)(sender, **kwargs)
            else:
                result = receiver(sender, **kwargs)
                if inspect.isawaitable(result):  # an object with an async __call__
                    result = await result
            results.append((receiver, result))
        return results

    def send(self, sender: Any | None = None, /, **kwargs: Any) -> list[tuple[Any, Any]]:
        """Refused: the audit receiver is a coroutine function. Use :meth:`send_async`."""
        raise TypeError(
            "login_signal is sent with: await login_signal.send_async(app, username=...)"
        )

    def receivers_of(self, sender: Any) -> list[tuple[Callable[..., Any], bool]]:
        """``sender``'s live receivers (and ANY's), each with whether it is a coroutine function."""
        return self._kept_for(sender)[0]

    def _kept_for(self, sender: Any) -> tuple[list[tuple[Callable[..., Any], bool]], int]:
        # The receivers, and the longest username the sender's audit takes (0: no audit).
        kept = self._kept.get(id(sender))
        if kept is not None and kept[0]() is sender:
            receivers = []
            for stored, is_ref, is_coroutine in kept[1]:
                receiver = stored() if is_ref else stored
                if receiver is None:  # collected; its callback has not run yet
                    return self._keep(sender)
                receivers.append((receiver, is_coroutine))
            return receivers, kept[2]
        return self._keep(sender)

    def _keep(self, sender: Any) -> tuple[list[tuple[Callable[..., Any], bool]], int]:
        receivers = [(r, inspect.iscoroutinefunction(r)) for r in self.receivers_for(sender)]
        # LoginAudit connects its receiver when it sets an app up: nothing kept survives that.
        extensions = getattr(sender, "extensions", None)
        audit = extensions.get(KEY) if isinstance(extensions, dict) else None
        max_length = audit.settings.username_max_length if audit else 0
        sender_id = id(sender)
        try:
            sender_ref = weakref.ref(sender, lambda _: self._kept.pop(sender_id, None))
        except TypeError:  # cannot tell when it goes: not kept
            return receivers, max_length
        stored = []
        for receiver, is_coroutine in receivers:
            weak = self._weak.get(_receiver_id(receiver))
            # Weakly connected receivers stay weakly held here too.
            stored.append((weak, True, is_coroutine) if weak else (receiver, False, is_coroutine))
        self._kept[sender_id] = (sender_ref, stored, max_length)
        return receivers, max_length


def _receiver_id(receiver: Callable[..., Any]) -> Hashable:
    # A bound method is made anew at each access: its function and instance name it.
    if inspect.ismethod(receiver):
        return id(receiver.__func__), id(receiver.__self__)
    return id(receiver)


login_signal = LoginSignal("login", "Sent once per login, with the app as sender and username=.")
"""Sent once per login, with the app as sender and ``username=``."""
namespace["login"] = login_signal
