"""Verdicts of quart-app-loadtest --verify that must not pass by accident.

These run against a small fake server whose faults are exact: it answers 503,
or drops a kept-alive connection without answering, or logs a login twice.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from quart_app.loadtest import main
from quart_app.records import LoginRecord, format_text

from server import free_port

Answer = Callable[[str, int], int | None]
"""Given a username and how many times it arrived, the status to answer (None: hang up)."""


class FakeServer:
    """A raw HTTP/1.1 server that logs each login it answers 200, as quart_app would.

    ``received`` counts every request that arrived, per username, whatever the answer.
    """

    def __init__(self, log: Path, answer: Answer, log_times: int = 1) -> None:
        self.log = log
        self.answer = answer
        self.log_times = log_times
        self.received: Counter[str] = Counter()
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                target = head.split(b" ", 2)[1].decode()
                query = dict(parse_qsl(urlsplit(target).query))
                username = query.get("username", "")
                self.received[username] += 1
                status = self.answer(username, self.received[username])
                if status is None:
                    break  # hang up without answering, as a server closing an idle connection
                if status == 200:
                    record = LoginRecord(username, datetime.now(UTC), "127.0.0.1")
                    with self.log.open("ab") as file:
                        file.write(format_text(record) * self.log_times)
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def fake_server(log: Path, answer: Answer, log_times: int = 1) -> AsyncIterator[FakeServer]:
    fake = FakeServer(log, answer, log_times)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    fake.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield fake


async def run_cli(argv: list[str]) -> int:
    """The command in a thread: its own event loop, while the fake server runs on this one."""
    return await asyncio.to_thread(main, argv)


def test_verify_fails_when_the_server_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "login_log.txt"
    status = main([f"http://127.0.0.1:{free_port()}", "-n", "20", "-q", "--verify", str(log)])

    assert status == 1
    out = capsys.readouterr().out
    assert "verify       FAILED: 0 acknowledged" in out
    assert "nothing was acknowledged" in out


async def test_verify_fails_when_every_login_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "login_log.txt"
    async with fake_server(log, lambda username, count: 503) as fake:
        status = await run_cli([fake.url, "-n", "20", "--json", "--verify", str(log)])

    assert status == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["statuses"] == {"503": 20}
    assert summary["verify"]["ok"] is False
    assert summary["verify"]["acknowledged"] == 0
