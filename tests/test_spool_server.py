"""Real hypercorn with a spool, real PostgreSQL away: no login lost, none stored twice.

The acceptance of the spool (issue 19), end to end: the database stopped or
hung mid-load, a COMMIT whose answer is lost mid-load, a host started while
it is down, and a spool that fills.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp

from quart_app.tools.loadtest import Summary

from helpers.pg import Database, pause, proxied, resume
from helpers.server import Server, run_server, send_logins
from helpers.verdicts import assert_recorded_once

GOES_TO_SPOOL = "they go to the spool"
"""The WARNING a process logs when it starts spooling."""


def spool_dir(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir(mode=0o700)
    return path


def spool_env(database: Database, spool: Path, **extra: str) -> dict[str, str]:
    """The server's settings: the test's table, spooled in ``spool``, durable mode."""
    return database.env(LOGIN_LOG_SPOOL_DIR=str(spool), LOGIN_LOG_DURABLE="true", **extra)


async def get(server: Server, path: str) -> tuple[int, str]:
    """``path``'s status and body."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(server.url + path) as response,
    ):
        return response.status, await response.text()


async def health_when(
    server: Server, until: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    """``/healthz`` once ``until(it)`` holds; fails after ``timeout`` seconds, showing the last."""
    health: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while not until(health := json.loads((await get(server, "/healthz"))[1])):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"/healthz never got there within {timeout} s: {health}") from None
    return health


def all_forwarded(health: dict[str, Any]) -> bool:
    """Writing to the table again, nothing left in the spool or the queue."""
    spool = health["spool"]
    return spool["database"] == "direct" and spool["records"] == 0 and health["pending"] == 0


async def load_while(
    server: Server, names: list[str], fault: Callable[[], Awaitable[None]]
) -> Summary:
    """Send ``names`` to ``server``; once half are answered, start ``fault()`` and see it end."""
    started: list[asyncio.Task[None]] = []
    run = await send_logins(
        server.url, names, when_half_done=lambda: started.append(asyncio.create_task(fault()))
    )
    await asyncio.wait_for(asyncio.gather(*started), timeout=60)
    return run


def seg_files(spool: Path) -> list[str]:
    return sorted(name for name in os.listdir(spool) if name.endswith(".seg"))


def stopped_cleanly(server: Server) -> str:
    """Stop ``server``; assert it exits 0 having abandoned nothing; its output."""
    assert server.stop() == 0, server.stderr
    stderr = server.stderr
    assert "NOT CONFIRMED" not in stderr, stderr
    return stderr


async def test_the_database_stopped_mid_load_costs_no_login_and_doubles_none(
    tmp_path: Path, throwaway_database: Database
) -> None:
    database, postgres = throwaway_database, throwaway_database.server
    assert postgres is not None
    spool = spool_dir(tmp_path)
    names = [f"stopped-{i}" for i in range(2000)]
    during = [f"while-stopped-{i}" for i in range(200)]
    while_down: list[Summary] = []
    readyz_while_down: list[tuple[int, str]] = []

    async def outage() -> None:
        await asyncio.to_thread(postgres.stop)
        try:
            # Logins sure to arrive while it is down, whenever the load ends.
            while_down.append(await send_logins(server.url, during))
            readyz_while_down.append(await get(server, "/readyz"))
            await asyncio.sleep(3)
        finally:
            await asyncio.to_thread(postgres.start)

    with run_server(tmp_path, spool_env(database, spool)) as server:
        run = await load_while(server, names, outage)
        health = await health_when(server, all_forwarded)
        stderr = stopped_cleanly(server)
    for summary in (run, *while_down):
        assert summary.statuses == {200: summary.requests}, (summary.statuses, summary.errors)
    assert readyz_while_down == [(200, "ok")]
    assert GOES_TO_SPOOL in stderr
    assert health["spool"]["forwarded"] >= len(during), health
    acknowledged = await assert_recorded_once(database, run, *while_down)
    assert acknowledged == len(names) + len(during)
    assert seg_files(spool) == []


async def test_a_hung_database_mid_load_costs_no_login_and_doubles_none(
    tmp_path: Path, throwaway_database: Database
) -> None:
    database, postgres = throwaway_database, throwaway_database.server
    assert postgres is not None
    spool = spool_dir(tmp_path)
    names = [f"hung-{i}" for i in range(2000)]
    during = [f"while-hung-{i}" for i in range(200)]
    while_hung: list[Summary] = []

    async def hang() -> None:
        stopped = pause(postgres)
        try:
            started = time.monotonic()
            while_hung.append(await send_logins(server.url, during))
            await asyncio.sleep(max(0.0, 3 - (time.monotonic() - started)))
        finally:
            resume(stopped)

    with run_server(tmp_path, spool_env(database, spool)) as server:
        run = await load_while(server, names, hang)
        health = await health_when(server, all_forwarded)
        stderr = stopped_cleanly(server)
    for summary in (run, *while_hung):
        assert summary.statuses == {200: summary.requests}, (summary.statuses, summary.errors)
    assert GOES_TO_SPOOL in stderr and "(no answer within " in stderr
    assert health["spool"]["forwarded"] >= len(during), health
    acknowledged = await assert_recorded_once(database, run, *while_hung)
    assert acknowledged == len(names) + len(during)
    assert seg_files(spool) == []


async def test_a_commit_whose_answer_is_lost_mid_load_is_spooled_and_stored_once(
    tmp_path: Path, throwaway_database: Database
) -> None:
    # The batch is in the table, its writer never hears so: it goes to the spool, with the ids
    # it was inserted with, and the forwarder must not store it a second time.
    database = throwaway_database
    proxy, url = await proxied(database.url)
    spool = spool_dir(tmp_path)
    env = spool_env(database, spool, LOGIN_LOG_DATABASE_URL=url)
    names = [f"lost-commit-{i}" for i in range(2000)]
    during = [f"while-unanswered-{i}" for i in range(200)]
    while_unanswered: list[Summary] = []

    async def lose_an_answer() -> None:
        proxy.lose_commit = "answer"
        try:
            async with asyncio.timeout(20):
                while not proxy.drop_replies:
                    await asyncio.sleep(0.01)
            # From now on no answer comes back: the database seems to hang.
            while_unanswered.append(await send_logins(server.url, during))
            await asyncio.sleep(1)
        finally:
            proxy.lose_commit, proxy.drop_replies = None, False

    try:
        with ExitStack() as stack:
            # In a thread: the proxy, in this loop, must answer the server's start.
            server = await asyncio.to_thread(stack.enter_context, run_server(tmp_path, env))
            run = await load_while(server, names, lose_an_answer)
            health = await health_when(server, all_forwarded)
            stderr = stopped_cleanly(server)
    finally:
        await proxy.close()
    for summary in (run, *while_unanswered):
        assert summary.statuses == {200: summary.requests}, (summary.statuses, summary.errors)
    assert GOES_TO_SPOOL in stderr and "(no answer within " in stderr
    assert health["spool"]["forwarded"] >= len(during), health
    assert health["spool"]["rejected"] == 0, health
    acknowledged = await assert_recorded_once(database, run, *while_unanswered)
    assert acknowledged == len(names) + len(during)
    assert seg_files(spool) == []


async def test_a_host_started_while_the_database_is_down_serves_and_forwards_once_it_is_up(
    tmp_path: Path, throwaway_database: Database
) -> None:
    database, postgres = throwaway_database, throwaway_database.server
    assert postgres is not None
    spool = spool_dir(tmp_path)
    early = [f"early-{i}" for i in range(300)]
    late = [f"late-{i}" for i in range(100)]
    await asyncio.to_thread(postgres.stop)
    try:
        with run_server(tmp_path, spool_env(database, spool)) as server:
            assert server.process.poll() is None, server.stderr
            assert await get(server, "/readyz") == (200, "ok")
            first = await send_logins(server.url, early)
            assert first.statuses == {200: len(early)}, (first.statuses, first.errors)
            assert await get(server, "/readyz") == (200, "ok")
            spooled = await health_when(server, lambda h: h["spool"]["records"] == len(early))
            assert spooled["spool"]["database"] == "spooling"
            assert seg_files(spool), "nothing was spooled"
            await asyncio.to_thread(postgres.start)
            forwarded = await health_when(server, all_forwarded)
            second = await send_logins(server.url, late)
            assert second.statuses == {200: len(late)}, (second.statuses, second.errors)
            stderr = stopped_cleanly(server)
    finally:
        if postgres.pid is None:
            await asyncio.to_thread(postgres.start)
    assert GOES_TO_SPOOL in stderr
    assert forwarded["spool"]["forwarded"] == len(early), forwarded
    assert await assert_recorded_once(database, first, second) == len(early) + len(late)
    assert seg_files(spool) == []


async def test_a_full_spool_refuses_logins_and_loses_no_acknowledged_one(
    tmp_path: Path, throwaway_database: Database
) -> None:
    database, postgres = throwaway_database, throwaway_database.server
    assert postgres is not None
    spool = spool_dir(tmp_path)
    # About 100 bytes a record: some 300 fit in 32 KiB, 1000 do not.
    names = [f"full-{i:04d}-" + "x" * 30 for i in range(1000)]
    env = spool_env(database, spool, LOGIN_LOG_SPOOL_MAX_BYTES="32768", LOGIN_LOG_FULL_TIMEOUT="1")
    with run_server(tmp_path, env) as server:
        before = await send_logins(server.url, ["before"])
        assert before.acknowledged == ["before"], server.stderr
        await asyncio.to_thread(postgres.stop)
        try:
            run = await send_logins(server.url, names)
            readyz = await get(server, "/readyz")
            full = await health_when(server, lambda h: h["spool"]["bytes"] > 0)
        finally:
            await asyncio.to_thread(postgres.start)
        forwarded = await health_when(server, all_forwarded)
        after = await send_logins(server.url, ["after"])
        assert after.acknowledged == ["after"], server.stderr
        stderr = stopped_cleanly(server)
    assert set(run.statuses) == {200, 503}, (run.statuses, run.errors)
    assert not run.errors, run.errors
    assert readyz[0] == 503 and "the spool is full" in readyz[1], readyz
    assert full["spool"]["bytes"] <= 32768, full
    assert GOES_TO_SPOOL in stderr
    assert forwarded["spool"]["forwarded"] >= run.statuses[200], forwarded
    acknowledged = await assert_recorded_once(database, before, run, after)
    assert acknowledged == 2 + run.statuses[200]
    assert seg_files(spool) == []
