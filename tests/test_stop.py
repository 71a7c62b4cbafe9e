"""Stopping a real hypercorn: a write that hangs, SIGHUP, workers, a parent that dies."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from quart_app.records import parse_line

from helpers.server import ROOT, Server, port_of, run_server, send_logins
from helpers.verdicts import assert_recorded_once

UNCONFIRMED = "NOT CONFIRMED WRITTEN"


def read_available(fd: int) -> bytes:
    """What a FIFO holds now, without waiting for more."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def complete_usernames(data: bytes) -> list[str]:
    """The usernames of the whole lines in ``data`` (a line cut short is left out)."""
    *lines, _ = data.decode("utf-8", errors="replace").split("\n")
    return [parse_line(line).username for line in lines]


def unconfirmed_usernames(stderr: str) -> list[str]:
    """The usernames of the records a stop logged as not confirmed written."""
    return [
        parse_line(line.split("): ", 1)[1]).username
        for line in stderr.splitlines()
        if UNCONFIRMED in line
    ]


async def wait_until_pending(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            async with session.get(f"{server.url}/healthz") as response:
                if (await response.json())["pending"] > 0:
                    return
            await asyncio.sleep(0.02)
    pytest.fail("the writer never blocked")


async def test_a_write_that_hangs_at_stop_is_logged_and_the_process_exits_3(
    tmp_path: Path,
) -> None:
    # A FIFO nobody reads is a log whose write(2) blocks for ever once the
    # pipe's 64 KiB are full, like a dead network file system.
    log_path = tmp_path / "login_log.txt"
    os.mkfifo(log_path)
    reader = os.open(log_path, os.O_RDONLY | os.O_NONBLOCK)
    env = {
        "QUART_LOGIN_LOG_PATH": str(log_path),
        "QUART_LOGIN_LOG_DRAIN_TIMEOUT": "2",
        "QUART_LOGIN_LOG_FULL_TIMEOUT": "0.5",  # logins waiting for the hung write give up
    }
    names = [f"hung-{i:04d}-" + "x" * 240 for i in range(600)]  # ~160 KiB of lines
    with run_server(tmp_path, env) as server:
        run = await send_logins(server.url, names, concurrency=50)
        await wait_until_pending(server)
        server.process.send_signal(signal.SIGTERM)
        # Well within the drain timeout, hypercorn's bounds and Kubernetes' 30 s.
        status = await asyncio.to_thread(server.process.wait, 30)
        stderr = server.stderr
    written = complete_usernames(read_available(reader))
    os.close(reader)
    unconfirmed = unconfirmed_usernames(stderr)

    assert status == 3, stderr
    # Answered 200 or 503 (waiting for the hung write), every login was kept:
    # written, or logged as not confirmed.
    assert run.answered == len(names)
    assert set(names) == set(written) | set(unconfirmed)
    assert unconfirmed, "nothing was left to log: the write did not hang"
    assert len(set(unconfirmed)) == len(unconfirmed)


@pytest.mark.parametrize(
    ("sig", "durable"),
    [
        (signal.SIGTERM, False),
        (signal.SIGTERM, True),
        (signal.SIGINT, False),
        (signal.SIGHUP, False),
    ],
    ids=["sigterm", "sigterm-durable", "sigint", "sighup"],
)
async def test_signal_mid_load_loses_nothing_and_exits_0(
    tmp_path: Path, sig: int, durable: bool
) -> None:
    log_path = tmp_path / "login_log.txt"
    env = {"QUART_LOGIN_LOG_PATH": str(log_path), "QUART_LOGIN_LOG_DURABLE": str(durable).lower()}
    names = [f"stop-{i}" for i in range(3000)]
    with run_server(tmp_path, env) as server:
        run = await send_logins(
            server.url, names, when_half_done=lambda: server.process.send_signal(sig)
        )
        status = await asyncio.to_thread(server.process.wait, 60)
        assert status == 0, server.stderr
    acknowledged = await assert_recorded_once(log_path, run)
    assert acknowledged >= len(names) // 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
async def test_signal_to_every_process_of_two_workers_loses_nothing(
    tmp_path: Path, sig: int
) -> None:
    # As systemd, Kubernetes or a closing terminal send it: to hypercorn's
    # parent and its workers at once. SIGHUP makes the parent reload: new
    # workers serve on, and the old ones drain first.
    log_path = tmp_path / "login_log.txt"
    names = [f"group-{i}" for i in range(3000)]
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(log_path)}, workers=2) as server:
        old_workers = {p.pid for p in server.workers()}
        runs = [
            await send_logins(server.url, names, when_half_done=lambda: server.signal_group(sig))
        ]
        if sig == signal.SIGHUP:
            runs.append(await send_logins(server.url, ["after-reload"]))
            assert runs[-1].acknowledged == ["after-reload"], server.stderr
            assert not old_workers & {p.pid for p in server.workers()}
            server.process.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(server.process.wait, 60)
        assert status == 0, server.stderr
    assert await assert_recorded_once(log_path, *runs) >= len(names) // 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
async def test_a_signal_to_the_parent_alone_stops_every_worker_losing_nothing(
    tmp_path: Path, sig: int
) -> None:
    # As `kill PID` or a supervisor that signals one process sends it (docs/deploying.md):
    # hypercorn's parent tells its workers to stop, then terminates those left.
    log_path = tmp_path / "login_log.txt"
    names = [f"parent-{i}" for i in range(3000)]
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(log_path)}, workers=2) as server:
        workers = server.workers()
        run = await send_logins(
            server.url, names, when_half_done=lambda: server.process.send_signal(sig)
        )
        status = await asyncio.to_thread(server.process.wait, 60)
        assert status == 0, server.stderr
        _, alive = await asyncio.to_thread(psutil.wait_procs, workers, 30)
        assert not alive, "workers outlived their parent's stop"
    assert await assert_recorded_once(log_path, run) >= len(names) // 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
async def test_a_worker_signalled_alone_drains_and_is_replaced(tmp_path: Path, sig: int) -> None:
    log_path = tmp_path / "login_log.txt"
    names = [f"alone-{i}" for i in range(3000)]
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(log_path)}, workers=2) as server:
        victim, survivor = server.workers()
        run = await send_logins(server.url, names, when_half_done=lambda: victim.send_signal(sig))
        await asyncio.to_thread(victim.wait, 30)  # not hypercorn's child: no exit status
        workers = server.workers()
        assert survivor in workers and victim not in workers and len(workers) == 2
        assert server.stop() == 0, server.stderr
    assert await assert_recorded_once(log_path, run) >= len(names) // 3


async def test_workers_whose_parent_dies_drain_and_exit(tmp_path: Path) -> None:
    log_path = tmp_path / "login_log.txt"
    names = [f"orphan-{i}" for i in range(3000)]
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(log_path)}, workers=2) as server:
        workers = server.workers()
        run = await send_logins(
            server.url, names, when_half_done=lambda: server.process.send_signal(signal.SIGKILL)
        )
        _, alive = await asyncio.to_thread(psutil.wait_procs, workers, 30)
        assert not alive, "orphaned workers kept serving"
        # The port is free for a restarted server.
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port_of(server))
    assert await assert_recorded_once(log_path, run) >= len(names) // 3


def test_the_stop_bounds_fit_kubernetes_and_hypercorn() -> None:
    import tomllib

    from quart_app.config import Settings

    toml = tomllib.loads((Path(__file__).parent.parent / "hypercorn.toml").read_text())
    drain = Settings().login_log_drain_timeout
    # hypercorn cancels the drain when its own bound passes first.
    assert toml["shutdown_timeout"] > drain + 2
    # In-flight requests, then the drain, then the log of what is left.
    assert toml["graceful_timeout"] + drain + 2 <= 30


async def test_workers_whose_parent_dies_while_they_start_stop_too(tmp_path: Path) -> None:
    log_path = tmp_path / "login_log.txt"
    env = {"QUART_LOGIN_LOG_PATH": str(log_path)}
    with run_server(tmp_path, env, workers=2, wait=False) as server:
        deadline = time.monotonic() + 30
        while len(workers := server.workers()) < 2:  # spawned, still importing the app
            assert time.monotonic() < deadline, "hypercorn never had 2 workers:\n" + server.stderr
            await asyncio.sleep(0.01)
        server.process.send_signal(signal.SIGKILL)
        _, alive = await asyncio.to_thread(psutil.wait_procs, workers, 30)
        assert not alive, "orphaned workers kept serving:\n" + server.stderr
        assert "stopping the whole server" not in server.stderr


def test_a_drain_longer_than_hypercorns_bound_is_refused_at_start(tmp_path: Path) -> None:
    env = {"QUART_LOGIN_LOG_PATH": str(tmp_path / "log.txt"), "QUART_LOGIN_LOG_DRAIN_TIMEOUT": "30"}
    with run_server(tmp_path, env) as server:
        status = server.process.wait(timeout=30)
    assert status != 0
    assert (
        "LOGIN_LOG_DRAIN_TIMEOUT (30 s) must stay at least 2 s below hypercorn's" in server.stderr
    )


def test_a_graceful_timeout_too_short_to_answer_waiting_logins_is_refused_at_start(
    tmp_path: Path,
) -> None:
    # With 0, logins waiting at a stop were cancelled unanswered: 500.
    env = {"QUART_LOGIN_LOG_PATH": str(tmp_path / "log.txt")}
    with run_server(tmp_path, env, hypercorn_settings={"graceful_timeout": 0}) as server:
        status = server.process.wait(timeout=30)
    assert status != 0
    assert "hypercorn's graceful_timeout (0 s) must be at least 1 s" in server.stderr


@pytest.mark.parametrize(
    ("name", "toml"), [("graceful_timeout", '"0"'), ("shutdown_timeout", "nan")]
)
def test_a_stop_bound_that_is_no_number_of_seconds_is_refused_at_start(
    tmp_path: Path, name: str, toml: str
) -> None:
    # Accepted before: the stop then crashed in hypercorn and the drain never ran.
    config = tmp_path / "hypercorn.toml"
    kept = [
        line
        for line in ROOT.joinpath("hypercorn.toml").read_text().splitlines()
        if not line.startswith(name)
    ]
    config.write_text("\n".join([*kept, f"{name} = {toml}", ""]))
    env = {"QUART_LOGIN_LOG_PATH": str(tmp_path / "log.txt")}
    with run_server(tmp_path, env, config=config) as server:
        status = server.process.wait(timeout=30)
    assert status != 0
    assert f"hypercorn's {name} must be a finite number of seconds" in server.stderr
