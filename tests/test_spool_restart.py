"""The spool across stops, crashes and restarts, with a real hypercorn and a real PostgreSQL.

A server stopped (SIGTERM) or killed (SIGKILL) while the database is away
leaves its logins in the spool directory; the next start, with the database
back, forwards them: every acknowledged login in the table exactly once. A
spool file a crash tore, or one damaged in the middle, costs no start and no
more than its damaged piece. Connections killed, and a COMMIT whose answer is
lost, while a backlog is forwarded double nothing and lose nothing.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack, suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit
from uuid import uuid4

import aiohttp
import asyncpg
import psutil
import pytest

from quart_app.records import LoginRecord
from quart_app.spool.frames import MAGIC, record_frames, scan
from quart_app.tools.loadtest import Summary

from helpers.pg import Database, connected, proxied, terminate_app_connections
from helpers.server import Server, run_server, send_logins
from helpers.verdicts import assert_recorded_once


def spool_dir(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir(mode=0o700)
    return path


def spool_env(database: Database, spool: Path, **extra: str) -> dict[str, str]:
    """A durable server spooling in ``spool``: its 200 is a record fsynced there, or committed."""
    settings = {"LOGIN_LOG_DATABASE_TIMEOUT": "2", **extra}
    return database.env(LOGIN_LOG_SPOOL_DIR=str(spool), LOGIN_LOG_DURABLE="true", **settings)


def segments(spool: Path) -> list[Path]:
    """The spool files waiting in ``spool``, oldest first."""
    return sorted(spool.glob("*.seg"))


def spooled_names(spool: Path) -> Counter[str]:
    """The usernames of the records readable in the spool files."""
    return Counter(
        item.record.username for path in segments(spool) for item in scan(path.read_bytes()).records
    )


async def away_rows(database: Database) -> int:
    """How many ``away-*`` logins the test's table holds."""
    async with connected(database.url) as connection:
        return await connection.fetchval(
            f"SELECT count(*) FROM {database.table} WHERE username LIKE 'away-%'"
        )


async def usernames(database: Database) -> Counter[str]:
    """The usernames in the test's table; none while it does not exist yet."""
    try:
        return Counter(row["username"] for row in await database.rows())
    except asyncpg.UndefinedTableError:
        return Counter()


async def get(server: Server, path: str) -> str:
    """The body of ``server``'s answer to ``GET path``, which must be a 200."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(server.url + path) as response,
    ):
        assert response.status == 200, (path, response.status)
        return await response.text()


async def spool_health(server: Server) -> dict:
    """The ``"spool"`` object of ``server``'s ``/healthz``."""
    return json.loads(await get(server, "/healthz"))["spool"]


def metric(text: str, name: str) -> float:
    """The value of series ``name`` (one, whatever its labels) in a ``/metrics`` answer."""
    found = re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)
    assert len(found) == 1, (name, found)
    return float(found[0])


def assert_none_refused(spool: Path, stderr: str) -> None:
    """No record was taken for one the table refuses, or one that may or may not be stored.

    A record resent with its own id after its COMMIT was in fact applied is
    skipped by the table: taken for refused, it would be in ``rejected.jsonl``.
    """
    assert not (spool / "rejected.jsonl").exists()
    assert "refuses" not in stderr and "cannot tell whether" not in stderr


async def wait_until_forwarded(server: Server, spool: Path, timeout: float = 30) -> None:
    """Until no spool file is left and the server writes to the table directly again."""
    async with asyncio.timeout(timeout):
        while segments(spool) or (await spool_health(server))["database"] != "direct":
            assert server.process.poll() is None, server.stderr
            await asyncio.sleep(0.1)


async def load_while(
    server: Server, names: list[str], fault: Callable[[], Awaitable[object] | object]
) -> Summary:
    """Send ``names`` to ``server``; once half are answered, run ``fault()`` (to its end)."""
    started: list[asyncio.Future[object]] = []

    def half_done() -> None:
        outcome = fault()
        if isinstance(outcome, Awaitable):
            started.append(asyncio.ensure_future(outcome))

    run = await send_logins(server.url, names, concurrency=100, when_half_done=half_done)
    await asyncio.gather(*started)
    return run


async def stop_logged(server: Server) -> tuple[int, str]:
    """SIGTERM ``server``; its exit status and what it wrote, once it has exited."""
    return await asyncio.to_thread(server.stop), server.stderr


class Outage:
    """The test's PostgreSQL stopped, then started again (by the fixture if the test fails)."""

    def __init__(self, database: Database) -> None:
        assert database.server is not None
        self.postgres = database.server

    async def begin(self) -> None:
        await asyncio.to_thread(self.postgres.stop)

    async def end(self) -> None:
        await asyncio.to_thread(self.postgres.start)


async def left_in_the_spool_by_a_stop(
    tmp_path: Path, database: Database, env: dict[str, str], away: list[str]
) -> tuple[Summary, Summary]:
    """A server logs ``before-*`` logins, the database goes away, it takes ``away``, is
    stopped (exit 0); the database comes back. Both runs: all answered 200."""
    outage = Outage(database)
    before = [f"before-{i}" for i in range(20)]
    with run_server(tmp_path, env) as server:
        first = await send_logins(server.url, before)
        await outage.begin()
        second = await send_logins(server.url, away, concurrency=50)
        status, stderr = await stop_logged(server)
    await outage.end()
    assert status == 0, stderr
    assert first.statuses == {200: len(before)} and second.statuses == {200: len(away)}
    spool = Path(env["QUART_LOGIN_LOG_SPOOL_DIR"])
    assert spooled_names(spool) == Counter(away)  # waiting there, each once
    return first, second


async def test_a_stop_during_an_outage_exits_0_and_the_next_start_forwards_every_login_once(
    tmp_path: Path, throwaway_database: Database
) -> None:
    database, outage = throwaway_database, Outage(throwaway_database)
    spool = spool_dir(tmp_path)
    env = spool_env(database, spool)
    before = [f"before-{i}" for i in range(1500)]
    away = [f"away-{i}" for i in range(1500)]
    with run_server(tmp_path, env) as server:
        # The outage begins mid-load: the batches in flight go to the spool too.
        first = await load_while(server, before, outage.begin)
        # The stop comes mid-load too: the logins taken meanwhile go to the spool.
        second = await load_while(server, away, lambda: server.process.send_signal(signal.SIGTERM))
        status = await asyncio.to_thread(server.process.wait, 60)
        stderr = server.stderr
    left = spooled_names(spool)
    await outage.end()

    assert status == 0, stderr
    assert "NOT CONFIRMED" not in stderr
    assert first.statuses == {200: len(before)}, first.statuses
    assert second.acknowledged and set(second.statuses) == {200}, second.statuses
    # Every login acknowledged during the outage waits in the spool, and nowhere else.
    assert set(second.acknowledged) <= set(left)
    assert not set(away) & set(await usernames(database))

    with run_server(tmp_path, env) as server:
        await wait_until_forwarded(server, spool)
        assert (await spool_health(server))["forwarded"] == sum(left.values())
        status, stderr = await stop_logged(server)
    assert status == 0, stderr
    assert_none_refused(spool, stderr)
    acknowledged = len(first.acknowledged) + len(second.acknowledged)
    assert await assert_recorded_once(database, first, second) == acknowledged


async def test_two_workers_killed_during_an_outage_lose_no_acknowledged_login_after_a_restart(
    tmp_path: Path, throwaway_database: Database
) -> None:
    database, outage = throwaway_database, Outage(throwaway_database)
    spool = spool_dir(tmp_path)
    env = spool_env(database, spool)
    before = [f"before-{i}" for i in range(1000)]
    away = [f"away-{i}" for i in range(2000)]
    with run_server(tmp_path, env, workers=2) as server:
        processes = server.processes()
        assert len(server.workers()) == 2

        def kill() -> None:
            for process in processes:  # hypercorn and its workers: a power cut, nearly
                with suppress(psutil.NoSuchProcess):
                    process.kill()

        first = await load_while(server, before, outage.begin)
        second = await load_while(server, away, kill)
        _, alive = await asyncio.to_thread(psutil.wait_procs, processes, 30)
        assert not alive
    left = spooled_names(spool)
    writers = {path.name.split("-")[1] for path in segments(spool)}
    await outage.end()

    assert first.statuses == {200: len(before)}, first.statuses
    assert second.acknowledged and set(second.statuses) == {200}, second.statuses
    assert set(second.acknowledged) <= set(left)
    assert len(writers) == 2, "both workers should have spooled"

    with run_server(tmp_path, env, workers=2) as server:
        await wait_until_forwarded(server, spool)
        status, stderr = await stop_logged(server)
    assert status == 0, stderr
    assert_none_refused(spool, stderr)
    assert "adopted the spool file" in stderr
    acknowledged = len(first.acknowledged) + len(second.acknowledged)
    assert await assert_recorded_once(database, first, second) == acknowledged


async def test_a_spool_file_a_crash_tore_is_forwarded_without_its_torn_record(
    tmp_path: Path, throwaway_database: Database
) -> None:
    database = throwaway_database
    spool = spool_dir(tmp_path)
    env = spool_env(database, spool)
    first, second = await left_in_the_spool_by_a_stop(
        tmp_path, database, env, [f"away-{i}" for i in range(300)]
    )
    # A write a crash cut short: the first 20 bytes of a record's frame.
    record = LoginRecord("torn-login", datetime.now(UTC), "192.0.2.7")
    torn = record_frames([record], [uuid4()], socket.gethostname(), [False])[0][:20]
    with segments(spool)[-1].open("ab") as file:
        file.write(torn)

    with run_server(tmp_path, env) as server:
        assert server.process.poll() is None, server.stderr  # started
        third = await send_logins(server.url, ["after"])
        assert third.statuses == {200: 1}
        await wait_until_forwarded(server, spool)
        health = await spool_health(server)
        status, stderr = await stop_logged(server)

    assert status == 0, stderr
    assert_none_refused(spool, stderr)
    assert health["torn"] == 1 and health["moved_aside"] == 0
    assert health["forwarded"] == len(second.acknowledged)
    assert "ends in a record a crash cut short (20 bytes, never acknowledged): dropped" in stderr
    assert "torn-login" not in await usernames(database)
    assert await assert_recorded_once(database, first, second, third) == 321
    assert not list((spool / "damaged").iterdir())


def frame_starts(data: bytes) -> list[int]:
    """Where each frame of an undamaged spool file begins (the header's first)."""
    starts, pos = [], 0
    while pos < len(data):
        assert data[pos : pos + 4] == MAGIC
        starts.append(pos)
        pos += 12 + int.from_bytes(data[pos + 4 : pos + 8], "big")
    return starts


async def test_a_spool_file_damaged_in_the_middle_loses_only_the_damaged_piece(
    tmp_path: Path, throwaway_database: Database
) -> None:
    database = throwaway_database
    spool = spool_dir(tmp_path)
    env = spool_env(database, spool)
    first, second = await left_in_the_spool_by_a_stop(
        tmp_path, database, env, [f"away-{i}" for i in range(300)]
    )
    [path] = segments(spool)
    data = bytearray(path.read_bytes())
    middle = frame_starts(bytes(data))[len(frame_starts(bytes(data))) // 2]
    data[middle + 20 : middle + 24] = bytes(b ^ 0xFF for b in data[middle + 20 : middle + 24])
    path.write_bytes(data)
    # The record whose frame was damaged: the only one no longer readable.
    lost = set(second.acknowledged) - {item.record.username for item in scan(bytes(data)).records}
    assert len(lost) == 1

    with run_server(tmp_path, env) as server:
        assert server.process.poll() is None, server.stderr
        await wait_until_forwarded(server, spool)
        await asyncio.sleep(2.5)  # the forwarder looks for files again each second
        health = await spool_health(server)
        metrics = await get(server, "/metrics")
        status, stderr = await stop_logged(server)

    assert status == 0, stderr
    assert_none_refused(spool, stderr)
    assert health["moved_aside"] == 1 and health["torn"] == 0
    assert health["forwarded"] == len(second.acknowledged) - 1
    assert metric(metrics, "quart_app_spool_moved_aside_total") >= 1
    # Kept, once (no loop): the damaged frame, up to the next one.
    kept = list((spool / "damaged").iterdir())
    assert [p.name for p in kept] == [f"{path.name}.{middle}"]
    piece = kept[0].read_bytes()
    assert bytes(data[middle : middle + len(piece)]) == piece
    assert data[middle + len(piece) : middle + len(piece) + 4] == MAGIC
    assert (
        f"login log: {len(piece)} unreadable bytes at offset {middle} of the spool file "
        f"{path.name}, moved aside to {kept[0]}; the records after them are forwarded"
    ) in stderr
    assert not segments(spool)
    stored = await usernames(database)
    assert not lost & set(stored)
    # Every other acknowledged login, exactly once.
    assert stored == Counter([*first.acknowledged, *set(second.acknowledged) - lost])
    readable = replace(second, acknowledged=[n for n in second.acknowledged if n not in lost])
    assert await assert_recorded_once(database, first, readable) == 319


async def slow_inserts_of(database: Database, prefix: str, seconds: float) -> None:
    """Each INSERT into the test's table that holds a ``prefix`` login takes ``seconds`` more.

    A database under load, for a backlog that takes a while to forward.
    """
    function = f"{database.table}_slow"
    database.cleanup.append(f"DROP FUNCTION IF EXISTS {function} CASCADE")
    await database.execute(
        f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF EXISTS (SELECT FROM new_rows WHERE username LIKE '{prefix}%') THEN "
        f"PERFORM pg_sleep({seconds}); END IF; RETURN NULL; END $$"
    )
    await database.execute(
        f"CREATE TRIGGER slow AFTER INSERT ON {database.table} REFERENCING NEW TABLE AS "
        f"new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    )


@pytest.mark.parametrize("restarted", [False, True], ids=["while-serving", "after-a-restart"])
async def test_connections_killed_while_a_backlog_is_forwarded_lose_and_double_nothing(
    tmp_path: Path, throwaway_database: Database, restarted: bool
) -> None:
    database, outage = throwaway_database, Outage(throwaway_database)
    spool = spool_dir(tmp_path)
    env = spool_env(database, spool)
    before = [f"before-{i}" for i in range(200)]
    away = [f"away-{i}" for i in range(3000)]  # two INSERTs of the forwarder, at least
    later = [f"later-{i}" for i in range(300)]
    # Each kill: (app connections killed, away-* rows in the table just before, just after).
    kills: list[tuple[int, int, int]] = []

    async def kill_while_forwarding() -> None:
        # Whenever one of the app's INSERTs runs: twice per part of the backlog in the table.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        async with connected(database.url) as connection:
            while (rows := await away_rows(database)) < len(away) and loop.time() < deadline:
                inserting = await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                    "'quart_app' AND state = 'active' AND query LIKE 'INSERT%'"
                )
                if inserting and sum(before == rows for _, before, _ in kills) < 2:
                    killed = await terminate_app_connections(database.url)
                    kills.append((killed, rows, await away_rows(database)))
                await asyncio.sleep(0.02)

    with ExitStack() as stack:
        server = stack.enter_context(run_server(tmp_path, env))
        first = await send_logins(server.url, before)
        await slow_inserts_of(database, "away-", 0.3)
        await outage.begin()
        second = await send_logins(server.url, away)
        if restarted:
            status, stderr = await stop_logged(server)
            assert status == 0, stderr
        assert spooled_names(spool) == Counter(away)
        await outage.end()
        killer = asyncio.create_task(kill_while_forwarding())
        stack.callback(killer.cancel)  # should the test fail before it ends
        if restarted:
            server = await asyncio.to_thread(stack.enter_context, run_server(tmp_path, env))
        # Logins meanwhile: to the spool behind the backlog, or to the table once it is in.
        third = await send_logins(server.url, later, concurrency=20)
        await killer
        await wait_until_forwarded(server, spool)
        status, stderr = await stop_logged(server)

    assert status == 0, stderr
    assert_none_refused(spool, stderr)
    assert (first.statuses, second.statuses, third.statuses) == (
        {200: 200},
        {200: 3000},
        {200: 300},
    )
    # Killed again and again; once at least while the backlog was part-way into the table.
    assert sum(1 for killed, _, _ in kills if killed) >= 3, kills
    assert any(killed and rows > 0 and after < len(away) for killed, rows, after in kills), kills
    assert await assert_recorded_once(database, first, second, third) == 3500


async def test_a_server_killed_part_way_through_forwarding_doubles_nothing_after_a_restart(
    tmp_path: Path, throwaway_database: Database
) -> None:
    database, outage = throwaway_database, Outage(throwaway_database)
    spool = spool_dir(tmp_path)
    env = spool_env(database, spool)
    away = [f"away-{i}" for i in range(3000)]  # two INSERTs of the forwarder, at least
    with run_server(tmp_path, env) as server:
        first = await send_logins(server.url, ["before"])
        await slow_inserts_of(database, "away-", 0.3)
        await outage.begin()
        second = await send_logins(server.url, away)
        await outage.end()
        # Once the forwarder's first INSERT is in, kill the server during its second.
        async with asyncio.timeout(30):
            while not await away_rows(database):
                await asyncio.sleep(0.02)
        processes = server.processes()
        for process in processes:
            process.kill()
        _, alive = await asyncio.to_thread(psutil.wait_procs, processes, 30)
        assert not alive
    assert 0 < await away_rows(database) < len(away)
    assert spooled_names(spool) == Counter(away)  # its file, whole: it was not done with it

    with run_server(tmp_path, env) as server:
        await wait_until_forwarded(server, spool)
        health = await spool_health(server)
        status, stderr = await stop_logged(server)
    assert status == 0, stderr
    assert (first.statuses, second.statuses) == ({200: 1}, {200: 3000})
    assert health["rejected"] == 0
    assert_none_refused(spool, stderr)
    assert await assert_recorded_once(database, first, second) == 3001


async def test_a_commit_whose_answer_is_lost_while_forwarding_is_not_doubled(
    tmp_path: Path, database: Database
) -> None:
    proxy, url = await proxied(database.url)
    port = urlsplit(url).port
    spool = spool_dir(tmp_path)
    env = spool_env(database, spool, LOGIN_LOG_DATABASE_URL=url, LOGIN_LOG_DATABASE_TIMEOUT="0.5")
    away = [f"away-{i}" for i in range(500)]
    try:
        with ExitStack() as stack:
            # In a thread: the proxy, in this loop, must answer the server's start.
            server = await asyncio.to_thread(stack.enter_context, run_server(tmp_path, env))
            first = await send_logins(server.url, ["first"])
            await database.wait_for_rows(1)
            await proxy.close()  # the database is away: no connection gets through
            second = await send_logins(server.url, away)
            assert sum(spooled_names(spool).values()) == len(away)

            proxy.lose_commit = "answer"
            await proxy.start(port)
            # The forwarder's COMMIT went through; its answer never came back.
            await database.wait_for_rows(1 + len(away))
            await asyncio.sleep(1)  # its attempts time out; each tries again
            waiting = await spool_health(server)
            proxy.drop_replies = False
            await wait_until_forwarded(server, spool)
            third = await send_logins(server.url, ["after"])
            health = await spool_health(server)
            status, stderr = await stop_logged(server)
    finally:
        await proxy.close()

    assert status == 0, stderr
    assert_none_refused(spool, stderr)
    assert (first.statuses, second.statuses, third.statuses) == ({200: 1}, {200: 500}, {200: 1})
    assert proxy.lose_commit is None and waiting["records"] == len(away)
    assert (health["forwarded"], health["rejected"]) == (len(away), 0)
    assert await assert_recorded_once(database, first, second, third) == 502
