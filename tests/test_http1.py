"""HTTP/1.1 that h11 cannot parse, sent as raw bytes to a real hypercorn: refused with why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.http1 import exchange
from helpers.http2 import H2Server, assert_no_traceback
from helpers.server import port_of, run_server


@pytest.fixture(scope="module")
def h1_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H2Server]:
    # H2Server's helpers (the lines logged since, stderr since) serve HTTP/1.1 too.
    tmp_path = tmp_path_factory.mktemp("h1")
    log_path = tmp_path / "login_log.txt"
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(log_path)}) as server:
        h1_server = H2Server(server, log_path, port_of(server))
        h1_server.new_lines()
        h1_server.new_stderr()
        yield h1_server


CHUNKED_ONLY = "Only Transfer-Encoding: chunked is supported"
HOST = b"Host: x\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (
            b"POST /login/ HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            CHUNKED_ONLY,
        ),
        (
            b"POST /login/ HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: identity\r\n\r\n",
            501,
            CHUNKED_ONLY,
        ),
        (b"POST /login/ HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: x\r\n\r\n", 501, CHUNKED_ONLY),
        (
            b"GET /login/?username=\xff\xfe HTTP/1.1\r\n" + HOST + b"\r\n",
            400,
            "illegal request line",
        ),
        (
            b"GET /login/\x00?username=x HTTP/1.1\r\n" + HOST + b"\r\n",
            400,
            "illegal request line",
        ),
        (b"GET /login/?username=x HTTP/1.1\r\n\r\n", 400, "Missing mandatory Host: header"),
        (
            # A head still unfinished past h11_max_incomplete_size (16 KiB).
            b"GET /login/?username=x HTTP/1.1\r\n" + HOST + b"X: " + b"y" * 20000,
            431,
            "Receive buffer too long",
        ),
    ],
    ids=["gzip-chunked", "identity", "x", "not-utf8", "nul", "no-host", "too-long"],
)
def test_what_h11_cannot_parse_is_refused_with_the_reason_and_logs_nothing(
    h1_server: H2Server, request_bytes: bytes, status: int, reason: str
) -> None:
    # hypercorn answered h11's status with an empty body.
    answered_status, headers, body = exchange(h1_server.port, request_bytes)
    assert (answered_status, body) == (status, reason)
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert h1_server.new_lines() == []
    assert_no_traceback(h1_server)


CLOSE = b"Connection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (
            b"GET login/?username=a HTTP/1.1\r\n" + HOST + CLOSE,
            400,
            "the request target must start with / or be an absolute URL",
        ),
        (b"get /login/?username=a HTTP/1.1\r\n" + HOST + CLOSE, 400, "illegal request line"),
        (
            b"Post /login/ HTTP/1.1\r\n" + HOST + b"Content-Type: application/x-www-form-urlencoded"
            b"\r\nContent-Length: 10\r\n" + CLOSE + b"username=a",
            400,
            "illegal request line",
        ),
        (
            b"GET %2Flogin/?username=a HTTP/1.1\r\n" + HOST + CLOSE,
            400,
            "the request target must start with / or be an absolute URL",
        ),
        (
            b"GET http%3A%2F%2Fx%2Flogin%2F?username=a HTTP/1.1\r\n" + HOST + CLOSE,
            400,
            "the request target must start with / or be an absolute URL",
        ),
        (
            b"GET http://x/login/#f?username=a HTTP/1.1\r\n" + HOST + CLOSE,
            400,
            "the request target must not hold a fragment (#): percent-encode it as %23",
        ),
        (
            b"GET /login/?username=a#b HTTP/1.1\r\n" + HOST + CLOSE,
            400,
            "the request target must not hold a fragment (#): percent-encode it as %23",
        ),
        (
            b"GET /login/?username=a HTTP/1.1\r\nHost: ..\r\n" + CLOSE,
            400,
            "the Host header is not a valid host name",
        ),
        (
            b"GET /?username=a HTTP/1.1\r\nHost: " + b"a" * 64 + b".example\r\n" + CLOSE,
            400,
            "the Host header is not a valid host name",
        ),
    ],
    ids=[
        "no-slash",
        "get",
        "Post",
        "encoded-slash",
        "encoded-url",
        "fragment",
        "query-hash",
        "empty-label",
        "long-label",
    ],
)
def test_a_target_or_method_no_client_sends_for_a_login_is_refused_unlogged(
    h1_server: H2Server, request_bytes: bytes, status: int, reason: str
) -> None:
    # Quart took both as logins: "login/" routed to /login/, "get" upper-cased
    # by hypercorn (methods are case-sensitive: RFC 9110 §9.1).
    answered_status, _, body = exchange(h1_server.port, request_bytes)
    assert (answered_status, body) == (status, reason)
    assert h1_server.new_lines() == []
    assert_no_traceback(h1_server)


def test_an_absolute_url_target_still_logs_in(h1_server: H2Server) -> None:
    request = b"GET http://x/login/?username=absolute HTTP/1.1\r\n" + HOST + CLOSE
    assert exchange(h1_server.port, request)[::2] == (200, "登录成功")
    assert ":absolute," in h1_server.new_lines()[0]  # then new_lines()'s own marker
