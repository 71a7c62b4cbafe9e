"""The spool in process: the database away costs no login; forwarded exactly once once back."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote
from uuid import uuid4

import asyncpg
import pytest
from quart.testing.app import LifespanError

from quart_app import create_app
from quart_app.config import ConfigError
from quart_app.records import LoginRecord
from quart_app.spool.frames import header_frame, record_frames

from helpers.pg import CLIENT, Database, changed_url, pause, resume
from helpers.server import ROOT


async def statuses_of(client, names: list[str]) -> dict[str, int]:
    """Send the logins one after another; each one's status."""
    return {
        name: (await client.get(f"/login/?username={quote(name)}", scope_base=CLIENT)).status_code
        for name in names
    }


def documented_spool_fields() -> set[str]:
    """The fields docs/probes.md says ``/healthz``'s ``spool`` object has."""
    text = (ROOT / "docs" / "probes.md").read_text(encoding="utf-8")
    bullet = text[text.index("- With a spool, `/healthz` also has") :].split("\n- ", 1)[0]
    named = {"healthz", "spool", "direct", "spooling", "written"}  # named, not fields
    return set(re.findall(r"`([a-z_]+)`", bullet)) - named


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
    """The usernames in the test's table, sorted; none while it does not exist yet."""
    try:
        return sorted(row["username"] for row in await database.rows())
    except asyncpg.UndefinedTableError:
        return []


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
            assert set(health["spool"]) == documented_spool_fields()
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


async def test_a_host_started_while_the_database_is_down_serves_and_forwards_once_it_is_up(
    tmp_path: Path, throwaway_database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    database, server = throwaway_database, throwaway_database.server
    assert server is not None
    spool = spool_dir(tmp_path)
    config = database.config(LOGIN_LOG_SPOOL_DIR=str(spool), LOGIN_LOG_DURABLE=True)
    server.stop()
    try:
        async with create_app(config).test_app() as test_app:
            client = test_app.test_client()
            names = [f"early-{i}" for i in range(10)]
            assert set((await statuses_of(client, names)).values()) == {200}
            assert (await client.get("/readyz")).status_code == 200
            assert [p.suffix for p in spool.iterdir() if p.is_file()].count(".seg") == 1
            server.start()
            await wait_for_usernames(database, names)
            await spool_health(client, lambda spool: spool["database"] == "direct")
    finally:
        if server.pid is None:
            server.start()
    assert not list(spool.glob("*.seg"))
    assert "cannot take records now" in caplog.text


async def test_no_spool_file_while_the_database_answers(tmp_path: Path, database: Database) -> None:
    spool = spool_dir(tmp_path)
    async with create_app(database.config(LOGIN_LOG_SPOOL_DIR=str(spool))).test_app() as test_app:
        client = test_app.test_client()
        assert await statuses_of(client, ["a", "b"]) == {"a": 200, "b": 200}
        await wait_for_usernames(database, ["a", "b"])
    assert sorted(p.name for p in spool.iterdir()) == [".lock", "damaged", "spool.json"]


async def test_a_record_the_table_refuses_for_good_after_its_200_goes_to_the_rejects_file(
    tmp_path: Path, throwaway_database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    database, server = throwaway_database, throwaway_database.server
    assert server is not None
    await database.create_table()
    spool = spool_dir(tmp_path)
    config = database.config(LOGIN_LOG_SPOOL_DIR=str(spool), LOGIN_LOG_DURABLE=True)
    async with create_app(config).test_app() as test_app:
        client = test_app.test_client()
        server.stop()
        try:
            names = ["ok-1", "refused-张三", "ok-2"]
            assert set((await statuses_of(client, names)).values()) == {200}
        finally:
            server.start()
        # A DBA's check, added while the database was away.
        await database.execute(
            f"ALTER TABLE {database.table} ADD CHECK (username NOT LIKE 'refused%')"
        )
        await wait_for_usernames(database, ["ok-1", "ok-2"])
        health = await spool_health(client, lambda spool: spool["rejected"] == 1)
        metrics = await (await client.get("/metrics")).get_data(as_text=True)
    assert health["spool"]["records"] == 0
    assert 'quart_app_spool_rejected_records_total{app="quart_app.app"} 1.0' in metrics
    rejected = [json.loads(line) for line in (spool / "rejected.jsonl").read_text().splitlines()]
    assert [(r["username"], r["ip"], r["host"]) for r in rejected] == [
        ("refused-张三", "192.0.2.10", socket.gethostname())
    ]
    assert "refuses for good a record acknowledged while the database was away" in caplog.text


async def test_a_table_found_unusable_once_the_database_is_back_keeps_the_records_and_says_why(
    tmp_path: Path, throwaway_database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    database, server = throwaway_database, throwaway_database.server
    assert server is not None
    spool = spool_dir(tmp_path)
    config = database.config(LOGIN_LOG_SPOOL_DIR=str(spool), LOGIN_LOG_DURABLE=True)
    server.stop()
    async with create_app(config).test_app() as test_app:
        client = test_app.test_client()
        try:
            assert await statuses_of(client, ["kept"]) == {"kept": 200}
        finally:
            server.start()
        # Made meanwhile by someone else, without the host column.
        await database.execute(f"CREATE TABLE {database.table} (id uuid PRIMARY KEY)")
        async with asyncio.timeout(15):
            while (readyz := await client.get("/readyz")).status_code == 200:
                await asyncio.sleep(0.05)
        reason = await readyz.get_data(as_text=True)
        assert reason.startswith("the table cannot take the spooled records: the table ")
        assert (await spool_health(client, lambda spool: True))["spool"]["records"] == 1
        await database.execute(f"DROP TABLE {database.table}")
        await database.create_table()
        await wait_for_usernames(database, ["kept"])
        async with asyncio.timeout(15):
            while (await client.get("/readyz")).status_code != 200:
                await asyncio.sleep(0.05)
    assert "the spooled records stay in the spool until it is fixed" in caplog.text


async def test_a_refused_password_still_refuses_to_start(
    tmp_path: Path, database: Database
) -> None:
    url = changed_url(database.url, password="Not-The-Password-42")
    config = database.config(
        LOGIN_LOG_DATABASE_URL=url, LOGIN_LOG_SPOOL_DIR=str(spool_dir(tmp_path))
    )
    with pytest.raises(LifespanError, match="password authentication failed"):
        async with create_app(config).test_app():
            pass


@pytest.mark.parametrize("fault", ["missing", "through a symlink"])
async def test_a_spool_directory_that_cannot_be_used_refuses_to_start(
    tmp_path: Path, database: Database, fault: str
) -> None:
    path = tmp_path / "spool"
    if fault == "through a symlink":
        spool_dir(tmp_path)
        (tmp_path / "link").symlink_to(path)
        path = tmp_path / "link"
    config = database.config(LOGIN_LOG_SPOOL_DIR=str(path))
    with pytest.raises(LifespanError, match=f"cannot use the spool directory {path}: "):
        async with create_app(config).test_app():
            pass


def test_a_spool_needs_a_database() -> None:
    with pytest.raises(ConfigError, match=r"LOGIN_LOG_SPOOL_DIR .* needs LOGIN_LOG_DATABASE_URL"):
        create_app({"LOGIN_LOG_SPOOL_DIR": "/tmp"})


async def test_a_spool_on_tmpfs_is_taken_with_a_warning(
    small_disk, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    disk = small_disk("1m")
    async with create_app(database.config(LOGIN_LOG_SPOOL_DIR=str(disk))).test_app() as test_app:
        client = test_app.test_client()
        assert await statuses_of(client, ["a"]) == {"a": 200}
    assert f"the spool directory {disk} is on tmpfs: what it holds does not survive" in caplog.text


async def test_a_spool_disk_that_fills_refuses_logins_and_turns_readyz_red(
    small_disk, throwaway_database: Database
) -> None:
    database, server = throwaway_database, throwaway_database.server
    assert server is not None
    disk = small_disk("64k")
    config = database.config(
        LOGIN_LOG_SPOOL_DIR=str(disk), LOGIN_LOG_DURABLE=True, LOGIN_LOG_FULL_TIMEOUT=0.5
    )
    async with create_app(config).test_app() as test_app:
        client = test_app.test_client()
        server.stop()
        try:
            statuses: dict[str, int] = {}
            for i in range(1000):  # 64 KiB hold a few hundred; then 503s, a few are enough
                statuses.update(await statuses_of(client, [f"{i:03d}-" + "x" * 200]))
                if list(statuses.values()).count(503) == 3:
                    break
            acknowledged = sorted(name for name, status in statuses.items() if status == 200)
            assert 503 in statuses.values() and acknowledged
            readyz = await client.get("/readyz")
            assert readyz.status_code == 503
            assert "the spool cannot be written (No space left on device)" in (
                await readyz.get_data(as_text=True)
            )
        finally:
            server.start()
        async with asyncio.timeout(30):
            while not set(acknowledged) <= set(await usernames(database)):
                await asyncio.sleep(0.1)
    stored = await usernames(database)
    assert len(stored) == len(set(stored))


async def test_a_spool_file_for_another_table_or_with_no_header_is_kept_aside_never_forwarded(
    tmp_path: Path, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    spool = spool_dir(tmp_path)
    async with create_app(database.config(LOGIN_LOG_SPOOL_DIR=str(spool))).test_app() as test_app:
        client = test_app.test_client()
        assert await statuses_of(client, ["ours"]) == {"ours": 200}
        binding = json.loads((spool / "spool.json").read_text())
        record = LoginRecord("theirs", datetime.now(UTC), "192.0.2.7")
        body = b"".join(record_frames([record], [uuid4()], binding["host"], [False]))
        dropped = {
            # Copied in from another host's spool, spooled for another table.
            "00000000000000000001-1-000001.seg": header_frame({**binding, "table": "other_log"})
            + body,
            "00000000000000000001-1-000002.seg": b"\x00not a header" + body,
        }
        for name, data in dropped.items():
            (spool / name).write_bytes(data)
        await spool_health(client, lambda spool: spool["moved_aside"] == 2)
        await wait_for_usernames(database, ["ours"])
    assert not list(spool.glob("*.seg"))
    assert {path.name: path.read_bytes() for path in (spool / "damaged").iterdir()} == {
        f"{name}.0": data for name, data in dropped.items()
    }
    assert "spooled for the table other_log" in caplog.text
    assert "its header is unreadable" in caplog.text


async def test_the_longest_record_fits_the_smallest_spool_or_the_start_is_refused(
    tmp_path: Path,
) -> None:
    config = {
        "LOGIN_LOG_DATABASE_URL": "postgresql://app@127.0.0.1:9/audit",  # away
        "LOGIN_LOG_SPOOL_DIR": str(spool_dir(tmp_path)),
        "LOGIN_LOG_SPOOL_MAX_BYTES": 4096,
        "LOGIN_LOG_HOST": "😀" * 255,  # 1,020 bytes in each record, and in each file's header
        "USERNAME_MAX_LENGTH": 320,
    }
    longest = "😀" * 320
    async with create_app(config).test_app() as test_app:
        client = test_app.test_client()
        assert await statuses_of(client, [longest]) == {longest: 200}
    name = "d" * 1000  # the database: named in each file's header
    config["LOGIN_LOG_DATABASE_URL"] = f"postgresql://app@127.0.0.1:9/{name}"
    with pytest.raises(ConfigError, match="LOGIN_LOG_SPOOL_MAX_BYTES must be at least 4719 "):
        async with create_app(config).test_app():
            pass
