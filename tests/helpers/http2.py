"""A raw HTTP/2 client (h2c, prior knowledge) for a real hypercorn, and a server's new lines.

The client is the ``h2`` package with its own checks off: headers reach
hypercorn exactly as written, invalid UTF-8 in ``:path`` included.
"""

from __future__ import annotations

import itertools
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

from helpers.payloads import Login
from helpers.server import Server


def raw_client() -> h2.connection.H2Connection:
    """An HTTP/2 client connection that sends headers exactly as given."""
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    return h2.connection.H2Connection(config=config)


def h2_client(
    port: int, window: int | None = None
) -> tuple[socket.socket, h2.connection.H2Connection]:
    """A new connection to ``port`` and a :func:`raw_client` on it, its preface not sent yet;
    ``window``: the initial flow-control window it offers the server for each stream."""
    connection = raw_client()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.initiate_connection()
    if window is not None:
        connection.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    return sock, connection


def pseudo_headers(target: bytes | None, method: bytes = b"GET") -> list[tuple[bytes, bytes]]:
    """The pseudo-headers of a request; ``target`` None: CONNECT's form, no :scheme nor :path."""
    if target is None:
        return [(b":method", method), (b":authority", b"127.0.0.1:443")]
    pseudo = [(b":method", method), (b":scheme", b"http"), (b":authority", b"127.0.0.1")]
    return [*pseudo, (b":path", target)]


def h2_request(
    port: int, target: bytes | None, *, method: bytes = b"GET", headers=(), body: bytes = b""
) -> tuple[int | None, str]:
    """Send one request on a new HTTP/2 connection; its status (None: no answer) and body."""
    connection = raw_client()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        request_headers = [*pseudo_headers(target, method), *headers]
        connection.send_headers(stream, request_headers, end_stream=not body)
        if body:
            connection.send_data(stream, body, end_stream=True)
        sock.sendall(connection.data_to_send())
        return read_answer(sock, connection, stream)


def read_answer(
    sock: socket.socket, connection: h2.connection.H2Connection, stream: int
) -> tuple[int | None, str]:
    """Read until ``stream`` ends: its status and body, or None and how it was reset or why
    the connection ended (the server's GOAWAY, or closed without one)."""
    status, data = None, b""
    while chunk := sock.recv(65536):
        for event in connection.receive_data(chunk):
            # A stop's GOAWAY (NO_ERROR) still lets the streams it covers end.
            if isinstance(event, h2.events.ConnectionTerminated) and (
                event.error_code or (event.last_stream_id or 0) < stream
            ):
                return None, repr(event)
            if getattr(event, "stream_id", None) != stream:
                continue  # another stream's
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                data += event.data
                connection.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, h2.events.StreamEnded):
                return status, data.decode()
            elif isinstance(event, h2.events.StreamReset):
                return None, f"reset {h2.errors.ErrorCodes(event.error_code).name}"
        sock.sendall(connection.data_to_send())
    return None, "connection closed"


@dataclass
class H2Server:
    """One real hypercorn a module's tests share, and what each test added to its log and stderr."""

    server: Server
    log_path: Path
    port: int
    _markers: Iterator[int] = field(default_factory=itertools.count)
    _log_offset: int = 0
    _stderr_offset: int = 0

    def request(self, target: bytes, **kwargs) -> tuple[int | None, str]:
        return h2_request(self.port, target, **kwargs)

    def login(self, login: Login) -> tuple[int | None, str]:
        # h2 closes the connection for NUL, CR or LF in a header value and for
        # whitespace around it: those go percent-encoded, which means the same.
        query = re.sub(rb"[\x00\r\n \t]", lambda m: b"%%%02X" % m[0][0], login.query)
        headers = [(b"content-type", login.content_type.encode())] if login.content_type else []
        method = login.method.encode()
        return self.request(b"/login/?" + query, method=method, headers=headers, body=login.body)

    def new_lines(self) -> list[str]:
        """The lines logged since the last call; its marker login shows the writer is past them."""
        marker = f"h2-marker-{next(self._markers)}"
        assert self.request(f"/login/?username={marker}".encode()) == (200, "登录成功")
        deadline = time.monotonic() + 10
        while True:
            text = self.log_path.read_bytes()[self._log_offset :].decode()
            lines = text.split("\n")[:-1]
            if lines and f":{marker}," in lines[-1]:
                break
            assert time.monotonic() < deadline, f"{marker} never logged: {text!r}"
            time.sleep(0.005)
        self._log_offset += len(text.encode())
        return lines[:-1]

    def new_stderr(self) -> str:
        """What hypercorn wrote to stderr since the last call."""
        text = self.server.stderr
        new, self._stderr_offset = text[self._stderr_offset :], len(text)
        return new


def assert_no_traceback(h2_server: H2Server) -> None:
    """hypercorn wrote no traceback to stderr since the last look."""
    stderr = h2_server.new_stderr()
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr
