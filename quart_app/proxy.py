"""The client's address, scheme and host from the forwarding header of trusted proxies.

This replaces hypercorn's ``ProxyFixMiddleware``, which puts whatever the header
says into the client address (``garbage``, ``<script>``, a quoted address with
its port, ``_hidden``, mojibake), matches ``Forwarded`` keys case-sensitively
and without the whitespace RFC 7239 allows (``For=…``, ``proto=https; for=…``),
splits at commas inside quoted strings, falls back from ``Forwarded`` to
``X-Forwarded-For`` in modern mode, and keeps the proxy's own address when the
header gives none. None of that can be configured away, and each of them logs
an address the client does not have.

Here ``PROXY_MODE=modern`` reads only ``Forwarded``, parsed as RFC 7239 writes
it; ``legacy`` reads only the ``X-Forwarded-*`` headers. The address is checked
and normalized with :mod:`ipaddress` (no quotes, port, brackets or zone), and
when the trusted element gives none the client address is ``-``, the log's
"unknown", rather than the proxy's. The scheme and host, which Quart uses for
absolute URLs such as its trailing-slash redirect, are taken only when valid.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from hypercorn.typing import ASGIFramework

UNKNOWN = "-"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e]|\\[\t \x21-\x7e])*"'
# One forwarded-pair with the optional whitespace around it, then what follows.
_PAIR = re.compile(rf"[ \t]*(?:({_TOKEN})=({_TOKEN}|{_QUOTED})[ \t]*)?([;,]|\Z)")
_QUOTED_PAIR = re.compile(r"\\(.)")
_PORT = re.compile(r":(?:[0-9]{1,5}|_[0-9A-Za-z._-]+)")
_HOST = re.compile(r"(?:[0-9A-Za-z.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss"}


def _address(node: str, *, bare_ipv6: bool) -> str | None:
    # RFC 7239 node: "[IPv6]" or IPv4, then an optional port; X-Forwarded-For
    # also carries bare IPv6 addresses.
    if node.startswith("["):
        host, bracket, port = node[1:].partition("]")
        version = 6 if bracket else 0
    elif bare_ipv6 and node.count(":") > 1:
        host, port, version = node, "", 6
    else:
        host, colon, port = node.partition(":")
        port, version = colon + port, 4
    if port and not _PORT.fullmatch(port):
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    # A zone (fe80::1%eth0) means nothing off the proxy's host, and an inet
    # column would drop it silently.
    if address.version != version or getattr(address, "scope_id", None) is not None:
        return None
    return str(getattr(address, "ipv4_mapped", None) or address)


def unmapped(address: str) -> str:
    """``::ffff:192.0.2.1`` (an IPv4 client of a dual-stack socket) as ``192.0.2.1``."""
    try:
        mapped = ipaddress.IPv6Address(address).ipv4_mapped
    except ValueError:
        return address
    return str(mapped) if mapped else address


class Forwarded(NamedTuple):
    """What the trusted proxy says about the request; None where it says nothing valid."""

    client: str | None
    scheme: str | None
    host: str | None


def _forwarded_elements(values: list[bytes]) -> list[dict[str, str]] | None:
    """The elements of ``Forwarded`` field values, or None if one is malformed."""
    elements: list[dict[str, str]] = []
    for raw in values:
        try:
            value = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
        pairs: dict[str, str] = {}
        position = 0
        while True:
            match = _PAIR.match(value, position)
            if match is None:
                return None
            key, token, separator = match.groups()
            if key is not None:
                key = key.lower()  # RFC 7239: parameter names are case-insensitive
                if key in pairs:  # and occur at most once per element
                    return None
                quoted = token.startswith('"')
                pairs[key] = _QUOTED_PAIR.sub(r"\1", token[1:-1]) if quoted else token
            if separator != ";":
                if pairs:  # an empty list element is not a hop
                    elements.append(pairs)
                pairs = {}
            if not separator:
                break
            position = match.end()
    return elements


def _legacy_value(headers: list[tuple[bytes, bytes]], name: bytes, hops: int) -> str | None:
    # Split as bytes: what a client wrote to the left of our proxies' part
    # cannot spoil it.
    parts = [
        part.strip(b" \t")
        for header, value in headers
        if header.lower() == name
        for part in value.split(b",")
    ]
    parts = [part for part in parts if part]
    if len(parts) < hops or not parts[-hops].isascii():
        return None
    return parts[-hops].decode("ascii")


def forwarded(headers: Iterable[tuple[bytes, bytes]], mode: str, hops: int) -> Forwarded:
    """What the ``hops``-th proxy from us forwarded: client address, scheme and host.

    ``mode`` is ``modern`` (``Forwarded``) or ``legacy`` (``X-Forwarded-For``,
    ``-Proto`` and ``-Host``). The client is None for a missing or malformed
    header, too few elements, or a value that is not an IP address
    (``unknown``, ``_hidden``, garbage); the scheme unless ``http`` or
    ``https``; the host unless a plain host name or address with a port.
    """
    headers = list(headers)
    if mode == "modern":
        elements = _forwarded_elements([v for name, v in headers if name.lower() == b"forwarded"])
        element = elements[-hops] if elements and len(elements) >= hops else {}
        node, scheme, host = element.get("for"), element.get("proto"), element.get("host")
        client = None if node is None else _address(node, bare_ipv6=False)
    else:
        node = _legacy_value(headers, b"x-forwarded-for", hops)
        client = None if node is None else _address(node, bare_ipv6=True)
        scheme = _legacy_value(headers, b"x-forwarded-proto", hops)
        host = _legacy_value(headers, b"x-forwarded-host", hops)
    scheme = scheme.lower() if scheme and scheme.lower() in ("http", "https") else None
    return Forwarded(client, scheme, host if host and _HOST.fullmatch(host) else None)


class ForwardedClientMiddleware:
    """ASGI middleware taking the client address, scheme and host from the trusted proxy."""

    def __init__(self, app: ASGIFramework, mode: str, trusted_hops: int) -> None:
        self.app = app
        self.mode = mode
        self.trusted_hops = trusted_hops

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Set the client to the forwarded address (``-`` for none), and scheme and host."""
        kind = scope["type"]
        if kind in ("http", "websocket"):
            client, scheme, host = forwarded(scope["headers"], self.mode, self.trusted_hops)
            # The port is the proxy's, not the client's: 0, as hypercorn's did.
            scope = {**scope, "client": (client or UNKNOWN, 0)}
            if scheme is not None:
                scope["scheme"] = scheme if kind == "http" else _WEBSOCKET_SCHEMES[scheme]
            if host is not None:
                headers = [(n, v) for n, v in scope["headers"] if n.lower() != b"host"]
                scope["headers"] = [*headers, (b"host", host.encode())]
        await self.app(scope, receive, send)
