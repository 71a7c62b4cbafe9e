"""Refusing request targets that Quart cannot decode, before Quart sees them.

Quart decodes the query string as strict UTF-8 and parses a path that does not
start with ``/`` as a URL, on every route, before any view or error handler
runs: raw invalid UTF-8 in the query (which HTTP/2 lets through, unlike h11),
an empty path (``:path = ?x``) or an unparseable absolute URL (``http://[x/``)
raise there, and the client gets a 500 and the log a traceback. This ASGI
middleware answers such requests 400 with the reason instead.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from hypercorn.typing import ASGIFramework

_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]


def refusal(scope: dict[str, Any]) -> str | None:
    """Why Quart could not take the request in ``scope``, or None if it can."""
    query: bytes = scope.get("query_string", b"")
    if not query.isascii():  # the common case costs one C-level scan
        try:
            query.decode()
        except UnicodeDecodeError:
            return "the query string is not valid UTF-8"
    path: str = scope["path"]
    if not path:
        return "the request target has no path"
    if path[0] != "/":
        try:
            urlparse(path)  # what Quart does with such a path
        except ValueError:
            return "the request target is not a valid URL"
    return None


class RequestGuard:
    """ASGI middleware answering 400 to the requests :func:`refusal` names."""

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on, or answer 400 with the reason."""
        kind = scope["type"]
        if kind in ("http", "websocket") and (reason := refusal(scope)) is not None:
            body = reason.encode()
            headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
            if kind == "http":
                await send({"type": "http.response.start", "status": 400, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            elif "websocket.http.response" in scope.get("extensions", {}):
                start = {"type": "websocket.http.response.start", "status": 400}
                await send({**start, "headers": headers})
                await send({"type": "websocket.http.response.body", "body": body})
            else:  # closing before accepting: the server answers 403
                await send({"type": "websocket.close", "code": 1008, "reason": reason})
            return
        await self.app(scope, receive, send)
