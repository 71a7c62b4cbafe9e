"""The spool in process: the database away costs no login; forwarded exactly once once back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quart_app import create_app

from helpers.pg import CLIENT, Database, pause, resume


async def statuses_of(client, names: list[str]) -> dict[str, int]:
    """Send the logins one after another; each one's status."""
    return {
        name: (await client.get(f"/login/?username={name}", scope_base=CLIENT)).status_code
        for name in names
    }


def spool_dir(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir(mode=0o700)
    return path


async def spool_health(client, until, timeout: float = 10) -> dict:
    """``/healthz`` once ``until(its "spool")`` holds."""
    async with asyncio.timeout(timeout):
        while not until((health := await (await client.get("/healthz")).get_json())["spool"]):
            await asyncio.sleep(0.02)
    return health


async def usernames(database: Database) -> list[str]:
    return sorted(row["username"] for row in await database.rows())


async def wait_for_usernames(database: Database, names: list[str], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while await usernames(database) != sorted(names):
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "default"])
async def test_the_database_down_then_back_costs_no_login_and_doubles_none(
    tmp_path: Path, throwaway_database: Database, durable: bool
) -> None:
    database, server = throwaway_database, throwaway_database.server
    assert server is not None
    config = database.config(
        LOGIN_LOG_SPOOL_DIR=str(spool_dir(tmp_path)),
        LOGIN_LOG_DURABLE=durable,
        LOGIN_LOG_DATABASE_TIMEOUT=1,
    )
    async with create_app(config).test_app() as test_app:
        client = test_app.test_client()
        assert await statuses_of(client, ["before"]) == {"before": 200}
        await wait_for_usernames(database, ["before"])
        server.stop()
        try:
            names = [f"away-{i:02d}" for i in range(30)]
            assert set((await statuses_of(client, names)).values()) == {200}
            assert (await client.get("/readyz")).status_code == 200
            health = await spool_health(client, lambda spool: spool["records"] == 30)
            assert health["spool"]["database"] == "spooling"
            metrics = await (await client.get("/metrics")).get_data(as_text=True)
            assert 'quart_app_spool_records{app="quart_app.app"} 30.0' in metrics
        finally:
            server.start()
        await wait_for_usernames(database, ["before", *names])
        assert await statuses_of(client, ["after"]) == {"after": 200}
        await wait_for_usernames(database, ["before", *names, "after"])
        health = await (await client.get("/healthz")).get_json()
        assert health["spool"]["database"] == "direct"
        assert health["spool"]["records"] == 0
        assert health["spool"]["forwarded"] == 30


async def test_a_hung_database_spills_to_the_spool(
    tmp_path: Path, throwaway_database: Database
) -> None:
    database, server = throwaway_database, throwaway_database.server
    assert server is not None
    config = database.config(
        LOGIN_LOG_SPOOL_DIR=str(spool_dir(tmp_path)),
        LOGIN_LOG_DURABLE=True,
        LOGIN_LOG_FULL_TIMEOUT=3,
    )
    async with create_app(config).test_app() as test_app:
        client = test_app.test_client()
        assert await statuses_of(client, ["before"]) == {"before": 200}
        stopped = pause(server)
        try:
            names = [f"hung-{i:02d}" for i in range(5)]
            assert set((await statuses_of(client, names)).values()) == {200}
        finally:
            resume(stopped)
        await wait_for_usernames(database, ["before", *names])
