"""A reason in the answers hypercorn gives HTTP/1.1 requests h11 cannot parse.

h11 refuses a request it cannot parse: a space, a control byte or bytes that
are not UTF-8 in the request line, a malformed header, no ``Host``, a transfer
coding other than ``chunked`` (501: RFC 9112 §6.1 asks it for a coding the
server does not understand), a head over ``h11_max_incomplete_size`` (431).
hypercorn 0.18 answers with h11's status and an empty body; here the body
gives h11's reason (``illegal request line``), as every refusal of the app
gives its own.

hypercorn has no hook for this, hence a subclass of its protocol class, put in
its place in ``hypercorn.protocol``, which builds one per connection. It
overrides a private method of ``H11Protocol``: tests/test_hypercorn_pins.py
fails when the hypercorn code it comes from changes.
"""

from __future__ import annotations

import re
import sys

import h11
import hypercorn.protocol as protocol
from hypercorn.protocol.h11 import H11Protocol

# What h11 quotes of the request after its reason ("illegal request line: b'…'"):
# left out, as the bytes that could not be parsed are the client's own.
_QUOTED = re.compile(r": (?:bytearray\()?b['\"].*", re.DOTALL)


def reason_for(error: h11.RemoteProtocolError) -> str:
    """The body of hypercorn's answer to a request h11 refused with ``error``."""
    return _QUOTED.sub("", str(error))


class ExplainingH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol whose own error answers say why."""

    async def _send_error_response(self, status_code: int) -> None:
        # hypercorn calls this only while it handles h11's RemoteProtocolError.
        body = reason_for(sys.exception()).encode()  # type: ignore[arg-type]
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
            *self.config.response_headers("h11"),
        ]
        await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())


def explain_http1_errors() -> None:
    """Make hypercorn serve each HTTP/1.1 connection with :class:`ExplainingH11Protocol`."""
    protocol.H11Protocol = ExplainingH11Protocol  # type: ignore[misc]
