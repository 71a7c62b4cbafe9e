"""The real server (quart_app.tools.server), and sending it logins with the load-test tool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from quart_app.tools.loadtest import LoadConfig, Summary, main, run_load
from quart_app.tools.loadtest.config import Method
from quart_app.tools.server import ROOT, Server, run_server

__all__ = [
    "ROOT",
    "Server",
    "port_of",
    "raw_get",
    "refused",
    "run_server",
    "send_logins",
]


async def send_logins(
    url: str,
    names: Sequence[str],
    *,
    concurrency: int = 200,
    method: Method = "post",
    when_half_done: Callable[[], object] | None = None,
) -> Summary:
    """One login per name, through the load-test tool; ``when_half_done`` runs once, mid-way.

    POST by default, though the tool never resends a GET either.
    """
    config = LoadConfig(url, names=names, concurrency=concurrency, method=method, timeout=60)
    progress = None
    if when_half_done is not None:
        half, done_already = len(names) // 2, False

        def progress(done: int, elapsed: float) -> None:
            nonlocal done_already
            if done >= half and not done_already:
                done_already = True
                when_half_done()

    return await run_load(config, progress=progress, progress_interval=0.005)


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``quart-app-loadtest argv`` in process; assert it exits 2 (a bad argument).

    Returns what it wrote to stderr, the message a user reads.
    """
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


async def raw_get(url: str, target: bytes) -> tuple[int, str]:
    """GET ``target`` exactly as given, as curl sends it: raw UTF-8, no percent-encoding."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def port_of(server: Server) -> int:
    """The loopback port ``server`` listens on."""
    return int(server.url.rsplit(":", 1)[1])
