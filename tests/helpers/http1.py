"""Raw HTTP/1.1 to a real hypercorn: bytes sent as they are, the answer read whole."""

from __future__ import annotations

import socket


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], str]:
    """Send ``request`` as it is on a new connection: the status, headers and body answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        response = b""
        while chunk := sock.recv(65536):  # each of these answers closes the connection
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body.decode()
