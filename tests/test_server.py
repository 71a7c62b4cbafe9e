"""Against real hypercorn: signals mid-load, several workers, a disk that really blocks."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest

from quart_app.records import parse_line
from quart_app.writer import LAG_BOUND

from helpers.logs import read_records
from helpers.server import ROOT, raw_get, run_server, send_logins
from helpers.verdicts import assert_recorded_once


async def test_real_server_takes_curls_raw_utf8_username(tmp_path: Path) -> None:
    log_path = tmp_path / "login_log.txt"
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(log_path)}) as server:
        assert await raw_get(server.url, "/login/?username=张三".encode()) == (200, "登录成功")
        assert await raw_get(server.url, b"/") == (200, "Hello World!")
        # Raw bytes that are not UTF-8 are refused before they reach the app.
        assert (await raw_get(server.url, b"/login/?username=\xff\xfe"))[0] == 400
        # "At once": the line is on disk within moments of the answer.
        for _ in range(100):
            if read_records(log_path):
                break
            await asyncio.sleep(0.01)
        [record] = read_records(log_path)
        assert (record.username, record.ip) == ("张三", "127.0.0.1")
        assert server.stop() == 0


async def test_durable_sigkill_mid_load_loses_no_acknowledged_login(tmp_path: Path) -> None:
    log_path = tmp_path / "login_log.txt"
    env = {"QUART_LOGIN_LOG_PATH": str(log_path), "QUART_LOGIN_LOG_DURABLE": "true"}
    names = [f"kill-{i}" for i in range(3000)]
    with run_server(tmp_path, env) as server:
        run = await send_logins(
            server.url, names, when_half_done=lambda: server.signal_group(signal.SIGKILL)
        )
        await asyncio.to_thread(server.process.wait, 60)
    # A SIGKILLed worker may leave half a batch at the end, which the check
    # leaves out; every acknowledged login was fsynced before its answer.
    assert await assert_recorded_once(log_path, run) >= len(names) // 3


async def test_several_workers_append_whole_lines(tmp_path: Path) -> None:
    log_path = tmp_path / "login_log.txt"
    # Long names make big batches: a split write would tear lines between workers.
    names = [f"w{i:05d}-" + "长" * 200 for i in range(4000)]
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(log_path)}, workers=2) as server:
        run = await send_logins(server.url, names, concurrency=256, method="get")
        assert len(run.acknowledged) == len(names)
        assert await asyncio.to_thread(server.stop) == 0, server.stderr
    # The check reads every line: a torn or interleaved one fails it.
    assert await assert_recorded_once(log_path, run) == len(names)


async def test_a_disk_that_really_blocks_stalls_nothing_but_the_writer(tmp_path: Path) -> None:
    # A FIFO nobody reads is a log file whose write(2) really blocks once the
    # pipe's 64 KiB buffer is full, like a hung network file system.
    log_path = tmp_path / "login_log.txt"
    os.mkfifo(log_path)
    reader = os.open(log_path, os.O_RDONLY | os.O_NONBLOCK)
    names = [f"fifo-{i:04d}-" + "x" * 240 for i in range(600)]  # ~160 KiB of lines
    env = {"QUART_LOGIN_LOG_PATH": str(log_path), "QUART_LOGIN_LOG_FULL_TIMEOUT": "1"}
    with run_server(tmp_path, env) as server:
        first = await send_logins(server.url, names[:400], concurrency=50)
        async with aiohttp.ClientSession() as session:
            # Until the writer is stuck, its oldest record older than the lag
            # bound: before that, a login may still be answered at once.
            for _ in range(200):
                async with session.get(f"{server.url}/healthz") as r:
                    if (await r.json())["oldest_pending_age_s"] > 2 * LAG_BOUND:
                        break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the writer never blocked")
            # Blocked write: / still answers at once ...
            for _ in range(20):
                async with session.get(f"{server.url}/") as r:
                    assert r.status == 200
        # ... and logins wait for their line, then get 503 once LOGIN_LOG_FULL_TIMEOUT
        # passed: never a 200 for a record that can only wait in memory.
        stalled = await send_logins(server.url, names[400:500], concurrency=50)
        assert stalled.statuses == {503: 100}
        rest = asyncio.create_task(send_logins(server.url, names[500:], concurrency=50))
        received = asyncio.create_task(asyncio.to_thread(read_until_eof, reader))
        assert len((await rest).acknowledged) == 100  # answered once the pipe drains

        server.process.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(server.process.wait, 60)
        assert status == 0, server.stderr
    lines = (await received).decode("utf-8").split("\n")
    assert lines.pop() == ""
    logged = [parse_line(line).username for line in lines]
    # Every login was kept, those answered 503 included ("may or may not be logged").
    assert sorted(logged) == sorted(names)
    assert set(first.acknowledged) | set(names[500:]) <= set(logged)


def read_until_eof(fd: int) -> bytes:
    """Everything written to the FIFO until its writer closes it."""
    os.set_blocking(fd, True)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def test_real_server_refuses_to_start_on_a_bad_log_path(tmp_path: Path) -> None:
    bad = tmp_path / "missing-dir" / "login_log.txt"
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(bad)}) as server:
        status = server.process.wait(timeout=30)
    assert status != 0
    assert f"cannot open the login log {str(bad)!r} for appending" in server.stderr
    assert "No such file or directory" in server.stderr


async def test_a_burst_of_connections_fits_the_listen_backlog(tmp_path: Path) -> None:
    # While the server accepts nothing, every connection waits in its listen
    # backlog; hypercorn's default of 100 would drop the rest (their clients
    # retry after 1 s, 3 s, ... and time out under a burst).
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(tmp_path / "log.txt")}) as server:
        host, port = server.url.removeprefix("http://").split(":")

        async def connect() -> asyncio.StreamWriter | None:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
            except (TimeoutError, OSError):
                return None
            return writer

        server.process.send_signal(signal.SIGSTOP)
        try:
            writers = await asyncio.gather(*(connect() for _ in range(500)))
        finally:
            server.process.send_signal(signal.SIGCONT)
        connected = [w for w in writers if w is not None]
        for writer in connected:
            writer.close()
        assert len(connected) == 500


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
async def test_make_run_leaves_nothing_git_would_track(tmp_path: Path) -> None:
    # `make run` serves from the repository with the default settings: the log
    # and its lock file land there and must not show up in `git status`.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    shutil.copy(ROOT / ".gitignore", checkout / ".gitignore")
    with run_server(tmp_path, cwd=checkout) as server:
        assert await raw_get(server.url, b"/login/?username=newcomer") == (200, "登录成功")
        assert server.stop() == 0, server.stderr
    assert read_records(checkout / "login_log.txt")[0].username == "newcomer"
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout.splitlines() == ["?? .gitignore"]
