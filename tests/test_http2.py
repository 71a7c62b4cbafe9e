"""HTTP/2 against a real hypercorn (h2c with prior knowledge): the same contract as HTTP/1.1.

HTTP/2 lets through what h11 refuses (raw invalid UTF-8 in ``:path``), so the
requests are sent by a small client on the ``h2`` package with its own checks
off: the bytes reach hypercorn exactly as written here.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h2.errors
import h2.events
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quart_app.records import LoginRecord, format_text

from helpers.http2 import (
    H2Server,
    assert_no_traceback,
    pseudo_headers,
    raw_client,
    read_answer,
)
from helpers.payloads import (
    BYTES_PATHS,
    TEXT_PATHS,
    bytes_login,
    is_acceptable,
    read_line,
    sent_username,
    text_login,
    usernames,
)
from helpers.server import port_of, run_server


@pytest.fixture(scope="module")
def h2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H2Server]:
    tmp_path = tmp_path_factory.mktemp("h2")
    log_path = tmp_path / "login_log.txt"
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(log_path)}) as server:
        h2_server = H2Server(server, log_path, port_of(server))
        h2_server.new_lines()
        h2_server.new_stderr()
        yield h2_server


JSON = b"application/json"
FORM = b"application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("target", "method", "headers", "body", "username"),
    [
        ("/login/?username=h2-张三".encode(), b"GET", [], b"", "h2-张三"),
        (b"/login/?username=h2-%E6%9D%8E%E5%9B%9B", b"GET", [], b"", "h2-李四"),
        (b"/login/", b"POST", [(b"content-type", b"application/json")], b'{"username": "j"}', "j"),
        (
            b"/login/",
            b"POST",
            [(b"content-type", b"application/x-www-form-urlencoded")],
            b"username=f",
            "f",
        ),
        (
            b"/login/?username=empty-body",
            b"POST",
            [(b"content-type", b"application/json")],
            b"",
            "empty-body",
        ),
    ],
    ids=["raw-utf8", "percent", "json", "form", "empty-body"],
)
def test_a_good_login_over_http2_is_200_and_its_exact_line(
    h2_server: H2Server, target: bytes, method: bytes, headers: list, body: bytes, username: str
) -> None:
    # No content-length: an HTTP/2 body is as long as its DATA frames.
    assert h2_server.request(target, method=method, headers=headers, body=body) == (200, "登录成功")
    [line] = h2_server.new_lines()
    record = read_line(line, "text")
    assert f"{line}\n" == format_text(LoginRecord(username, record.time, "127.0.0.1")).decode()
    assert_no_traceback(h2_server)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (b"/login/?username=H2\xff\xfe", "the query string is not valid UTF-8"),
        (b"/login/?username=\xed\xa0\x80", "the query string is not valid UTF-8"),
        (b"/?\xff", "the query string is not valid UTF-8"),
        (b"/healthz?\xc3", "the query string is not valid UTF-8"),
        (b"?username=nopath", "the request target has no path"),
        (b"http://[x/login/?username=x", "the request target is not a valid URL"),
    ],
)
def test_what_quart_cannot_decode_is_400_over_http2_and_logs_nothing(
    h2_server: H2Server, target: bytes, reason: str
) -> None:
    assert h2_server.request(target) == (400, reason)
    assert h2_server.new_lines() == []
    assert_no_traceback(h2_server)


@settings(max_examples=100, deadline=None)
@given(path=st.sampled_from(TEXT_PATHS), username=usernames)
def test_property_any_username_over_http2_gives_one_exact_line_or_a_4xx(
    h2_server: H2Server, path: str, username: str
) -> None:
    status, answer = h2_server.login(text_login(path, username))
    records = [read_line(line, "text") for line in h2_server.new_lines()]
    assert_no_traceback(h2_server)
    if is_acceptable(username):
        assert (status, answer) == (200, "登录成功")
        assert [r.username for r in records] == [username.strip()]
    else:
        assert status is not None and 400 <= status < 500, answer
        assert records == []


@settings(max_examples=60, deadline=None)
@given(
    path=st.sampled_from(BYTES_PATHS),
    payload=st.binary(max_size=300) | usernames.map(lambda u: u.encode("utf-8", "surrogatepass")),
)
def test_property_any_bytes_over_http2_give_one_line_of_what_was_sent_or_a_4xx(
    h2_server: H2Server, path: str, payload: bytes
) -> None:
    status, answer = h2_server.login(bytes_login(path, payload))
    records = [read_line(line, "text") for line in h2_server.new_lines()]
    assert_no_traceback(h2_server)
    assert status is not None and status < 500, answer
    if status == 200:
        [record] = records
        assert record.username == sent_username(path, payload)
    else:
        assert records == []


LOWER_CASE_METHOD = "the method has lower-case letters: methods are case-sensitive"
NO_SLASH = "the request target must start with / or be an absolute URL"


@pytest.mark.parametrize(
    ("target", "method", "body", "reason"),
    [
        (None, b"CONNECT", b"", "CONNECT is not supported: this server is not a proxy"),
        (
            None,
            b"CONNECT",
            b"tunnelled bytes",
            "CONNECT is not supported: this server is not a proxy",
        ),
        ("/login/é?username=x".encode(), b"GET", b"", "the path is not ASCII: percent-encode it"),
        (b"/\xff", b"GET", b"", "the path is not ASCII: percent-encode it"),
        (b"/login/?username=m", "GÉT".encode(), b"", "the method is not ASCII"),
        (b"/login/?username=m", b"get", b"", LOWER_CASE_METHOD),
        (b"/login/?username=m", b"Get", b"", LOWER_CASE_METHOD),
        (b"login/?username=m", b"GET", b"", NO_SLASH),
    ],
    ids=[
        "connect",
        "connect-with-data",
        "utf8-path",
        "ff-path",
        "utf8-method",
        "get",
        "Get",
        "no-slash",
    ],
)
def test_what_hypercorn_cannot_take_is_400_over_http2_and_logs_nothing(
    h2_server: H2Server, target: bytes | None, method: bytes, body: bytes, reason: str
) -> None:
    # hypercorn 0.18 raised UnboundLocalError (CONNECT has no :path) or
    # UnicodeDecodeError (path, method) before the app ran: no answer, a traceback.
    assert h2_server.request(target, method=method, body=body) == (400, reason)
    assert h2_server.new_lines() == []
    assert_no_traceback(h2_server)


@dataclass
class Streams:
    """One HTTP/2 connection's logins, sent a few streams at a time, and what became of them."""

    answered: dict[str, int] = field(default_factory=dict)
    not_processed: list[str] = field(default_factory=list)
    """Refused (REFUSED_STREAM), above GOAWAY's last stream, or never sent: safe to retry."""
    lost: list[str] = field(default_factory=list)
    """Neither answered nor known to be unprocessed: the client cannot tell."""


def send_logins_on_one_connection(
    port: int, names: list[str], in_flight: int, timeout: float = 20
) -> Streams:
    """GET /login/ for each name on one connection, ``in_flight`` at a time, until GOAWAY."""
    connection, streams = raw_client(), Streams()
    unsent, open_streams, statuses = list(names), dict[int, str](), dict[int, int]()
    goaway: h2.events.ConnectionTerminated | None = None
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        connection.initiate_connection()
        while True:
            while goaway is None and unsent and len(open_streams) < in_flight:
                stream, name = connection.get_next_available_stream_id(), unsent.pop(0)
                target = f"/login/?username={name}".encode()
                connection.send_headers(stream, pseudo_headers(target), end_stream=True)
                open_streams[stream] = name
            sock.sendall(connection.data_to_send())
            if not open_streams and (goaway is not None or not unsent):
                break
            sock.settimeout(max(deadline - time.monotonic(), 0.001))  # then socket.timeout
            if not (chunk := sock.recv(65536)):
                break
            for event in connection.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    statuses[event.stream_id] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.StreamEnded):
                    streams.answered[open_streams.pop(event.stream_id)] = statuses[event.stream_id]
                elif isinstance(event, h2.events.StreamReset):
                    name = open_streams.pop(event.stream_id)
                    refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                    (streams.not_processed if refused else streams.lost).append(name)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    goaway = event
                    for stream in [s for s in open_streams if s > event.last_stream_id]:
                        streams.not_processed.append(open_streams.pop(stream))
    streams.lost += open_streams.values()
    streams.not_processed += unsent
    return streams


def test_past_the_request_limit_each_login_is_answered_or_refused_unlogged(
    tmp_path: Path,
) -> None:
    # hypercorn's keep_alive_max_requests closed the connection on the stream
    # past the limit: it and those in flight were logged, and never answered.
    log_path = tmp_path / "login_log.txt"
    names = [f"limit-{i}" for i in range(70)]
    env = {"QUART_LOGIN_LOG_PATH": str(log_path)}
    with run_server(tmp_path, env, hypercorn_settings={"keep_alive_max_requests": 20}) as server:
        h2_server = H2Server(server, log_path, port_of(server))
        answered: dict[str, int] = {}
        pending, connections = names, 0
        while pending and connections < 10:
            streams = send_logins_on_one_connection(h2_server.port, pending, in_flight=6)
            assert streams.lost == [], streams
            answered.update(streams.answered)
            pending, connections = streams.not_processed, connections + 1
        assert answered == dict.fromkeys(names, 200)
        assert connections == 4  # 20 logins each
        logged = [read_line(line, "text").username for line in h2_server.new_lines()]
        assert sorted(logged) == sorted(names)  # each once: none refused was logged
        assert_no_traceback(h2_server)


def test_a_body_still_coming_after_its_answer_ends_no_other_stream(h2_server: H2Server) -> None:
    # hypercorn raised KeyError on DATA for a stream already answered and
    # closed the connection, with every other stream on it.
    connection = raw_client()
    with socket.create_connection(("127.0.0.1", h2_server.port), timeout=10) as sock:
        connection.initiate_connection()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"100000")]
        connection.send_headers(1, [*pseudo_headers(b"/login/", b"POST"), *headers])
        connection.send_data(1, b" " * 10000)
        sock.sendall(connection.data_to_send())
        assert read_answer(sock, connection, 1) == (413, "the body is larger than 65536 bytes")
        connection.send_data(1, b" " * 10000)
        connection.send_headers(3, pseudo_headers(b"/login/?username=after-413"), end_stream=True)
        sock.sendall(connection.data_to_send())
        assert read_answer(sock, connection, 3) == (200, "登录成功")
    assert [read_line(line, "text").username for line in h2_server.new_lines()] == ["after-413"]
    assert_no_traceback(h2_server)


def test_a_stop_refuses_new_streams_as_not_processed_and_answers_the_others(
    tmp_path: Path,
) -> None:
    # hypercorn reset them with NO_ERROR, which does not tell the client
    # whether the request was processed, so whether it may send it again.
    log_path = tmp_path / "login_log.txt"
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(log_path)}) as server:
        port = port_of(server)
        connection = raw_client()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            connection.initiate_connection()
            headers = [*pseudo_headers(b"/login/", b"POST"), (b"content-type", b"application/json")]
            connection.send_headers(1, headers)
            connection.send_data(1, b'{"username": "before-stop"')  # the app waits for the rest
            sock.sendall(connection.data_to_send())
            server.process.send_signal(signal.SIGTERM)
            wait_until_refused(port)  # hypercorn is stopping: it stops listening
            connection.send_headers(3, pseudo_headers(b"/login/?username=x"), end_stream=True)
            sock.sendall(connection.data_to_send())
            assert read_answer(sock, connection, 3) == (None, "reset REFUSED_STREAM")
            connection.send_data(1, b"}", end_stream=True)
            sock.sendall(connection.data_to_send())
            assert read_answer(sock, connection, 1) == (200, "登录成功")
        assert server.stop() == 0, server.stderr
    assert [read_line(line, "text").username for line in log_path.read_text().splitlines()] == [
        "before-stop"
    ]


def wait_until_refused(port: int, timeout: float = 10) -> None:
    """Return once nothing listens on ``port`` any more."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, f"port {port} still listens"
        time.sleep(0.01)


@pytest.mark.parametrize("target", [b"/login/?username=a\x00b", b"/login/?username=a\rb"])
def test_a_target_h2_finds_malformed_ends_the_connection_unanswered(
    h2_server: H2Server, target: bytes
) -> None:
    # A known limit (docs/guarantees.md): h2 ends the whole connection, not the stream.
    status, answer = h2_server.request(target)
    assert status is None and answer.startswith("<ConnectionTerminated error_code:1,"), answer
    assert h2_server.new_lines() == []
    assert_no_traceback(h2_server)
