"""What both baselines share: the app, its routes, and the line a login becomes."""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from blinker import Namespace
from quart import Quart, current_app, request

from quart_app.inputs import BadLogin, check_username, needs_body, username_of
from quart_app.records import LoginRecord, format_text
from quart_app.serving.http1 import accept_utf8_query_strings

# A plain blinker signal, as the Flask original has: login_signal refuses an app
# without LoginAudit.
login_signal = Namespace().signal("login")

# What a receiver does with a finished line: (app, path, line) -> awaitable.
LineSink = Callable[[Quart, str, bytes], Coroutine[Any, Any, None]]


def log_path() -> str:
    """The log file, from the variable the project uses; required so a run never
    appends to the repository's own login_log.txt by accident."""
    path = os.environ.get("QUART_LOGIN_LOG_PATH")
    if not path:
        raise RuntimeError("set QUART_LOGIN_LOG_PATH for the benchmark baselines")
    return path


def create_app(name: str, sink: LineSink) -> Quart:
    """An app with the project's ``/`` and ``/login/``, logging each login through ``sink``."""
    accept_utf8_query_strings()  # the same HTTP parser as quart_app.asgi
    app = Quart(name)
    path = log_path()

    @app.get("/")
    async def index() -> str:
        return "Hello World!"

    @app.get("/login/")
    async def login() -> str:
        # The project's own parsing and checks, so only the signal's receiver differs.
        body = await request.get_data(as_text=False) if needs_body(request) else b""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        username = check_username(username_of(request, body))
        await login_signal.send_async(app, username=username)
        return "登录成功"

    @app.errorhandler(BadLogin)
    async def bad_login(error: BadLogin) -> tuple[str, int]:
        return error.message, error.status

    async def receiver(sender: Quart, *, username: str, **_: Any) -> None:
        record = LoginRecord(username, datetime.now(UTC), request.remote_addr or "-")
        await sink(sender, path, format_text(record))

    # weak=False: nothing else holds the closure (see quart_app.receiver).
    login_signal.connect(receiver, sender=app, weak=False)
    return app
