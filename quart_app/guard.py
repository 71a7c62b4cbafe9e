"""Refusing request targets that Quart cannot decode, before Quart sees them.

Quart decodes the query string as strict UTF-8 and parses a path that does not
start with ``/`` as a URL, on every route, before any view or error handler
runs: raw invalid UTF-8 in the query (which HTTP/2 lets through, unlike h11),
an empty path (``:path = ?x``) or an unparseable absolute URL (``http://[x/``)
raise there, and the client gets a 500 and the log a traceback. This ASGI
middleware answers such requests 400 with the reason instead. It counts an
HTTP request it refuses as a refused login under ``bad_request`` when its path
is the login route's, and under ``unreadable_target`` when it has no path to
read: any of those may have been a login, so they are counted, apart. A
WebSocket handshake to the login route is refused here too (``bad_request``),
with the reason rather than Quart's HTML page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from hypercorn.typing import ASGIFramework

from .metrics import Metrics

_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]


def refusal(scope: dict[str, Any]) -> str | None:
    """Why Quart could not take the request in ``scope``, or None if it can."""
    query: bytes = scope.get("query_string", b"")
    if not query.isascii():  # the common case costs one C-level scan
        try:
            query.decode()
        except UnicodeDecodeError:
            return "the query string is not valid UTF-8"
    if (reason := _host_refusal(scope["headers"])) is not None:
        return reason
    path: str = scope["path"]
    if not path:
        return "the request target has no path"
    # As the client sent it: hypercorn percent-decodes the path ("%2Flogin/").
    raw: bytes = scope.get("raw_path") or path.encode(errors="surrogatepass")
    # find(), not "in": bytes' "in" tries the operand as an int first and
    # raises and clears a TypeError each time (bench/README.md).
    if raw.find(b"#") >= 0 or query.find(b"#") >= 0:  # no fragment in a request target
        return "the request target must not hold a fragment (#): percent-encode it as %23"
    if (raw[:1] != b"/" or path[0] != "/") and path != "*":
        try:
            url = urlparse(path)  # what Quart does with such a path
        except ValueError:
            return "the request target is not a valid URL"
        # RFC 9112's forms: "/path", an absolute URL, or "*". Quart routed
        # "login/" to /login/: a login from a target no client sends.
        # Its scheme as sent, not percent-encoded ("http%3A%2F%2Fh%2Flogin%2F").
        sent_as_url = raw[:1] == b"/" or raw.lower().startswith(f"{url.scheme}://".encode())
        if not (url.scheme and url.netloc and sent_as_url):
            return "the request target must start with / or be an absolute URL"
    return None


def _host_refusal(headers: list[tuple[bytes, bytes]]) -> str | None:
    # werkzeug IDNA-encodes the host's name (without the port) to route, before
    # any error handler runs: an empty label or one over 63 octets was a 500.
    for name, value in headers:
        if name == b"host":
            host = value.partition(b":")[0]
            # The usual host ("127.0.0.1", "example.com") settles it without a codec.
            if host.isascii() and len(host) <= 63 and host.find(b"..") < 0 and host[:1] != b".":
                return None
            try:
                host.decode("latin-1").lower().encode("idna")
            except UnicodeError:
                return "the Host header is not a valid host name"
            return None
    return None


def counted_as(path: str, login_path: str | None) -> str | None:
    """The refusal reason a refused request for ``path`` is counted under; None: not a login."""
    try:
        # An absolute URL routes on its path, as Quart parses it.
        routed = path if path[:1] == "/" else urlparse(path).path
    except ValueError:
        routed = ""
    if not routed:
        return "unreadable_target"
    return "bad_request" if routed == login_path else None


class RequestGuard:
    """ASGI middleware answering 400 to the requests :func:`refusal` names.

    In your own app: ``app.asgi_app = RequestGuard(app.asgi_app)``; given the
    app's ``metrics`` and its login route's path, refusals of logins are counted.
    """

    def __init__(
        self, app: ASGIFramework, metrics: Metrics | None = None, login_path: str | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.login_path = login_path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on, or answer 400 with the reason."""
        kind = scope["type"]
        if kind == "http" and (reason := refusal(scope)) is not None:
            if self.metrics and (counted := counted_as(scope["path"], self.login_path)):
                self.metrics.logins_refused.labels(counted).inc()
            await _answer_400(kind, scope, send, reason)
        elif kind == "websocket" and (reason := self._websocket_refusal(scope)) is not None:
            await _answer_400(kind, scope, send, reason)
        else:
            await self.app(scope, receive, send)

    def _websocket_refusal(self, scope: dict[str, Any]) -> str | None:
        if (reason := refusal(scope)) is not None:
            return reason
        if scope["path"] == self.login_path:  # else Quart's own 400, an HTML page
            if self.metrics:
                self.metrics.logins_refused.labels("bad_request").inc()
            return "a WebSocket does not log in: use GET or POST"
        return None


async def _answer_400(kind: str, scope: dict[str, Any], send: Any, reason: str) -> None:
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
