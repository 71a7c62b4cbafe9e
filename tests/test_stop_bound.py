"""A stop answers what it can before hypercorn cancels the rest, and ends in time.

At ``graceful_timeout`` hypercorn 0.18 cancels the requests still running: it
answers a cancelled request 500 when it can, and an HTTP/2 answer cancelled
while its connection's sender was cancelled first waited for ever, and the
stop with it, before the drain began.
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.disk import fill
from helpers.http2 import h2_client, pseudo_headers, read_answer
from helpers.payloads import read_line
from helpers.server import Server, port_of, run_server

GRACEFUL_S = 1
SETTINGS = {"graceful_timeout": GRACEFUL_S}


@contextlib.contextmanager
def serve(
    tmp_path: Path, workers: int | None = None, graceful_timeout: float = GRACEFUL_S
) -> Iterator[tuple[Server, Path]]:
    """A server logging to a file in ``tmp_path``, and that file's path."""
    log_path = tmp_path / "login_log.txt"
    env = {"QUART_LOGIN_LOG_PATH": str(log_path)}
    settings = {"graceful_timeout": graceful_timeout}
    with run_server(tmp_path, env, workers=workers, hypercorn_settings=settings) as server:
        yield server, log_path


def stop_in_time(server: Server, bound: float = GRACEFUL_S + 10) -> int:
    """SIGTERM to every process of the server; its exit status, failing if it outlives ``bound``."""
    started = time.monotonic()
    server.signal_group(signal.SIGTERM)
    try:
        return server.process.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {time.monotonic() - started:.0f} s after SIGTERM")


def wait_for_lines(log_path: Path, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(log_path.read_bytes().splitlines() if log_path.exists() else []) < count:
        assert time.monotonic() < deadline, f"fewer than {count} lines logged"
        time.sleep(0.05)


def usernames(log_path: Path) -> list[str]:
    return sorted(read_line(line, "text").username for line in log_path.read_text().splitlines())


STOPPING_503 = (
    "登录失败, 请稍后再试 "
    "(login not confirmed: the server is stopping; it may or may not be logged)"
)


@pytest.mark.parametrize("workers", [None, 2])
def test_a_login_whose_body_never_ends_is_answered_503_and_holds_up_no_stop(
    tmp_path: Path, workers: int | None
) -> None:
    # hypercorn cancelled it at graceful_timeout: a 500 and a traceback.
    with serve(tmp_path, workers) as (server, log_path):
        sock, connection = h2_client(port_of(server))
        with sock:
            connection.send_headers(1, pseudo_headers(b"/login/?username=done"), end_stream=True)
            headers = [*pseudo_headers(b"/login/", b"POST"), (b"content-type", b"application/json")]
            connection.send_headers(3, headers)
            connection.send_data(3, b'{"username": "never-ends"')  # and never the rest
            sock.sendall(connection.data_to_send())
            wait_for_lines(log_path, 1)
            server.signal_group(signal.SIGTERM)
            assert read_answer(sock, connection, 3) == (503, STOPPING_503)
            assert stop_in_time(server) == 0, server.stderr
    assert "Traceback" not in server.stderr
    assert "is shutting down" not in server.stderr
    assert usernames(log_path) == ["done"]


@pytest.mark.parametrize("workers", [None, 2])
def test_an_http1_login_whose_body_never_ends_is_answered_503_at_the_stop(
    tmp_path: Path, workers: int | None
) -> None:
    with serve(tmp_path, workers) as (server, log_path):
        with socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) as sock:
            sock.sendall(
                b"POST /login/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\nusername="
            )
            time.sleep(0.5)  # the request is in the route, reading its body
            server.signal_group(signal.SIGTERM)
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert (response.status, response.read().decode()) == (503, STOPPING_503)
            assert response.getheader("Retry-After") == "1"
        assert stop_in_time(server) == 0, server.stderr
    assert "Traceback" not in server.stderr
    assert not log_path.exists() or log_path.read_bytes() == b""


@pytest.mark.parametrize("workers", [None, 2])
def test_clients_that_never_take_their_answers_do_not_hold_up_the_stop(
    tmp_path: Path, workers: int | None
) -> None:
    with serve(tmp_path, workers) as (server, log_path):
        clients = []
        for i in range(4):  # each answer's body waits for a window never opened
            sock, connection = h2_client(port_of(server), window=0)
            connection.send_headers(1, pseudo_headers(f"/login/?username=u{i}".encode()), True)
            sock.sendall(connection.data_to_send())
            clients.append(sock)
        wait_for_lines(log_path, 4)
        try:
            status = stop_in_time(server)
        finally:
            for sock in clients:
                sock.close()
        # hypercorn restarted an idle timer in a task group being cancelled: exit 1.
        assert status == 0, server.stderr
    assert "is shutting down" not in server.stderr
    assert "Traceback" not in server.stderr  # one per connection cancelled at graceful_timeout
    assert usernames(log_path) == ["u0", "u1", "u2", "u3"]


def test_a_login_still_waiting_when_the_stop_cancels_requests_is_answered_503(
    tmp_path: Path, small_disk
) -> None:
    # The login waits for a full disk longer than graceful_timeout: hypercorn
    # would cancel it and answer 500. It is refused first, while it can be.
    log_path = small_disk("64k") / "login_log.txt"
    env = {
        "QUART_LOGIN_LOG_PATH": str(log_path),
        "QUART_LOGIN_LOG_FULL_TIMEOUT": "30",
        "QUART_LOGIN_LOG_DRAIN_TIMEOUT": "1",
    }
    with run_server(tmp_path, env, hypercorn_settings=SETTINGS) as server:
        fill(log_path.parent)
        answers: list[tuple[int, str]] = []

        def log_in(username: str) -> None:
            client = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=20)
            client.request("GET", f"/login/?username={username}")
            response = client.getresponse()
            answers.append((response.status, response.read().decode()))

        log_in("first")  # answered at once; its write fails: later logins wait
        deadline = time.monotonic() + 10
        while "No space left" not in server.stderr:
            assert time.monotonic() < deadline, server.stderr
            time.sleep(0.05)
        thread = threading.Thread(target=log_in, args=("waits",))
        thread.start()
        time.sleep(0.5)  # the login is waiting
        status = stop_in_time(server)
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert [code for code, _ in answers] == [200, 503], answers
    assert "stopping" in answers[1][1]
    assert status == 3  # the records were never written: reported, not lost silently
    given_up = "NOT CONFIRMED WRITTEN (not written within the drain timeout of 1.0 s): "
    for username in ("first", "waits"):
        assert f"{given_up}登录日志:用户名:{username}," in server.stderr


def test_an_http2_connection_that_never_opened_a_stream_is_closed_when_the_stop_begins(
    tmp_path: Path,
) -> None:
    # hypercorn held it until graceful_timeout, then cancelled it: the stop
    # took the whole graceful_timeout, with a traceback.
    with serve(tmp_path, graceful_timeout=20) as (server, _):
        sock, connection = h2_client(port_of(server))
        with sock:
            sock.sendall(connection.data_to_send())
            assert sock.recv(65536)  # the server's SETTINGS: the connection is up
            assert stop_in_time(server, bound=5) == 0, server.stderr
            sock.settimeout(1)
            while sock.recv(65536):  # closed by now, not left to the client
                pass
    assert "Traceback" not in server.stderr
