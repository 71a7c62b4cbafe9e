"""Real hypercorn processes logging to PostgreSQL: both protocols, faults mid-load, three hosts."""

from __future__ import annotations

import asyncio
import signal
import socket
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import pytest

from quart_app.tools.loadtest import Summary
from quart_app.tools.server import free_port

from helpers.http2 import h2_request
from helpers.pg import Database, changed_url, password_of, terminate_app_connections
from helpers.server import Server, port_of, run_server, send_logins
from helpers.verdicts import assert_recorded_once

HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


async def test_http1_and_http2_logins_are_rows_with_the_peer_and_the_host_name(
    tmp_path: Path, database: Database
) -> None:
    with run_server(tmp_path, database.env()) as server:
        posted = await send_logins(server.url, ["http1-post-张三"])
        got = await send_logins(server.url, ["http1-get-👩‍💻"], method="get")
        target = "/login/?username=http2-Zoë".encode()
        status = await asyncio.to_thread(h2_request, port_of(server), target)
        assert status == (200, "登录成功")
        rows = await database.wait_for_rows(3)
        assert server.stop() == 0, server.stderr
    assert posted.acknowledged + got.acknowledged == ["http1-post-张三", "http1-get-👩‍💻"]
    assert sorted((row["username"], str(row["ip"]), row["host"]) for row in rows) == [
        (name, "127.0.0.1", socket.gethostname())
        for name in sorted(["http1-post-张三", "http1-get-👩‍💻", "http2-Zoë"])
    ]


async def load_while(server: Server, names: list[str], fault) -> Summary:
    """Send ``names`` to ``server``; once half are answered, start ``fault()`` and see it end."""
    started: list[asyncio.Task[None]] = []
    run = await send_logins(
        server.url, names, when_half_done=lambda: started.append(asyncio.create_task(fault()))
    )
    await asyncio.gather(*started)
    return run


async def test_the_writers_connection_killed_mid_load_loses_and_doubles_nothing(
    tmp_path: Path, database: Database
) -> None:
    names = [f"killed-{i}" for i in range(3000)]
    killed: list[int] = []

    async def kill_repeatedly() -> None:
        for _ in range(10):
            killed.append(await terminate_app_connections(database.url))
            await asyncio.sleep(0.05)

    with run_server(tmp_path, database.env()) as server:
        run = await load_while(server, names, kill_repeatedly)
        assert server.stop() == 0, server.stderr
        assert "works again" in server.stderr, "the writer never saw its connection go"
    assert sum(killed) >= 3, "the writer's connection was never killed"
    assert await assert_recorded_once(database, run) == len(names)


@pytest.mark.parametrize(
    ("stop_signal", "durable"),
    [(signal.SIGINT, False), (signal.SIGQUIT, True)],
    ids=["fast-stop", "crash-durable"],
)
async def test_postgres_stopped_and_restarted_mid_load_loses_and_doubles_nothing(
    tmp_path: Path, throwaway_database: Database, stop_signal: int, durable: bool
) -> None:
    database, postgres = throwaway_database, throwaway_database.server
    assert postgres is not None
    names = [f"restart-{i}" for i in range(3000)]

    async def restart() -> None:
        await asyncio.to_thread(postgres.stop, stop_signal)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(postgres.start)

    env = database.env(LOGIN_LOG_DURABLE=str(durable).lower())
    with run_server(tmp_path, env) as server:
        run = await load_while(server, names, restart)
        assert server.stop() == 0, server.stderr
        assert "works again" in server.stderr, "the writer never saw the server go"
    assert await assert_recorded_once(database, run) >= len(names) // 2, run.statuses


async def test_three_hosts_loaded_then_stopped_store_each_login_once_with_its_host(
    tmp_path: Path, database: Database
) -> None:
    names = {host: [f"{host}-{i}" for i in range(1000)] for host in HOSTS}
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                run_server(tmp_path, database.env(LOGIN_LOG_HOST=f"web-{host}"), host=host)
            )
            for host in HOSTS
        ]

        def stop_all() -> None:
            for server in servers:
                server.process.send_signal(signal.SIGTERM)

        runs = await asyncio.gather(
            *(
                send_logins(server.url, names[host], when_half_done=stop_all if i == 0 else None)
                for i, (server, host) in enumerate(zip(servers, HOSTS, strict=True))
            )
        )
        statuses = [await asyncio.to_thread(s.process.wait, 60) for s in servers]
        assert statuses == [0, 0, 0], [s.stderr for s in servers]
    await assert_recorded_once(database, *runs)
    for row in await database.rows():
        assert row["host"] == "web-" + row["username"].rsplit("-", 1)[0]
    for host, run in zip(HOSTS, runs, strict=True):
        assert run.acknowledged, f"{host} answered no login before its stop"


async def test_three_hosts_starting_at_once_on_an_empty_database_all_start(
    tmp_path: Path, database: Database
) -> None:
    with ExitStack() as stack:
        # Each in a thread: all three processes start before any is waited for.
        servers = await asyncio.gather(
            *(
                asyncio.to_thread(
                    stack.enter_context,
                    run_server(tmp_path, database.env(LOGIN_LOG_HOST=f"web-{host}"), host=host),
                )
                for host in HOSTS
            )
        )
        for server, host in zip(servers, HOSTS, strict=True):
            run = await send_logins(server.url, [host])
            assert run.acknowledged == [host], server.stderr
        rows = await database.wait_for_rows(3)
    assert sorted((row["username"], row["host"]) for row in rows) == [
        (host, f"web-{host}") for host in HOSTS
    ]


@pytest.mark.parametrize("fault", ["unreachable", "wrong password"])
async def test_a_server_whose_database_cannot_be_used_refuses_to_start(
    tmp_path: Path, database: Database, fault: str
) -> None:
    if fault == "unreachable":
        url, reason = changed_url(database.url, port=free_port()), "ConnectionRefusedError"
    else:
        url = changed_url(database.url, password="Not-The-Password-42")
        reason = "InvalidPasswordError: password authentication failed"
    with run_server(tmp_path, database.env(LOGIN_LOG_DATABASE_URL=url)) as server:
        status = server.process.wait(timeout=30)
        stderr = server.stderr
    assert status != 0
    where = url.split("@")[1].split("?")[0]
    assert "cannot use the login log database " in stderr and f"@{where}: " in stderr
    assert reason in stderr
    assert password_of(url) not in stderr and password_of(database.url) not in stderr


def test_a_password_with_an_unencoded_at_sign_is_refused_without_showing_it(
    tmp_path: Path,
) -> None:
    # asyncpg would end the password at the first '@' and quote the rest in its error.
    url = f"postgresql://w1:p@ss:Sekr3tPw@127.0.0.1:{free_port()}/postgres"
    with run_server(tmp_path, {"QUART_LOGIN_LOG_DATABASE_URL": url}) as server:
        status = server.process.wait(timeout=30)
        stderr = server.stderr
    assert status != 0
    assert "LOGIN_LOG_DATABASE_URL has an '@', '[' or ']' in its user name or password" in stderr
    assert "Sekr3t" not in stderr


async def test_metrics_and_probes_never_show_the_password(
    tmp_path: Path, throwaway_database: Database
) -> None:
    database, postgres = throwaway_database, throwaway_database.server
    assert postgres is not None
    with run_server(tmp_path, database.env(LOGIN_LOG_DATABASE_TIMEOUT="0.5")) as server:
        await send_logins(server.url, ["before"])
        await asyncio.to_thread(postgres.stop)
        try:
            await send_logins(server.url, ["while-down"])
            await asyncio.sleep(1)
            async with aiohttp.ClientSession() as session:
                shown = ""
                for path in ("/healthz", "/readyz", "/metrics"):
                    async with session.get(server.url + path) as response:
                        shown += await response.text()
        finally:
            await asyncio.to_thread(postgres.start)
        assert server.stop() == 0, server.stderr
        stderr = server.stderr
    assert "writes are failing" in shown
    assert password_of(database.url) not in shown + stderr
    assert "NOT CONFIRMED" not in stderr
