"""PostgreSQL going away while the app serves: down, hung, then back; nothing lost or doubled."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from quart_app import create_app
from quart_app.records import parse_line

from helpers.pg import CLIENT, Database, password_of, pause, proxied, resume
from helpers.stores import writer_of


async def statuses_of(client, names: list[str]) -> dict[str, int]:
    """Send the logins one after another; each one's status."""
    return {
        name: (await client.get(f"/login/?username={name}", scope_base=CLIENT)).status_code
        for name in names
    }


async def wait_until_ready(client, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while (await client.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.05)


async def wait_until_failing(client, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while True:
            readyz = await client.get("/readyz")
            if "writes are failing" in await readyz.get_data(as_text=True):
                return
            await asyncio.sleep(0.02)


async def test_down_while_serving_logins_wait_get_503_and_are_kept_up_to_max_pending(
    throwaway_database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    database, server = throwaway_database, throwaway_database.server
    assert server is not None
    config = database.config(
        LOGIN_LOG_MAX_PENDING=20, LOGIN_LOG_FULL_TIMEOUT=0.2, LOGIN_LOG_DATABASE_TIMEOUT=1
    )
    async with create_app(config).test_app() as test_app:
        client = test_app.test_client()
        assert (await statuses_of(client, ["before"])) == {"before": 200}
        await database.wait_for_rows(1)

        server.stop()
        names = [f"down-{i:02d}" for i in range(25)]
        # Taken before the writer knew: answered at once, as a login is while the store keeps up.
        statuses = await statuses_of(client, names[:1])
        await wait_until_failing(client)
        # Then each waits for its row, gets 503 after LOGIN_LOG_FULL_TIMEOUT and stays
        # queued ("may or may not be stored"), until LOGIN_LOG_MAX_PENDING are waiting.
        statuses |= await statuses_of(client, names[1:])
        readyz = await client.get("/readyz")
        health = await client.get("/healthz")
        metrics = await (await client.get("/metrics")).get_data(as_text=True)
        server.start()
        await wait_until_ready(client)
        rows = await database.wait_for_rows(21)

    assert list(statuses.values()) == [200] + [503] * 24
    assert readyz.status_code == 503
    assert "writes are failing" in await readyz.get_data(as_text=True)
    body = await health.get_json()
    assert body["store"] == "postgresql" and body["pending"] == 20
    assert body["last_error"].startswith("DatabaseError: ")
    # Neither the password nor the address is shown to whoever asks.
    shown = await health.get_data(as_text=True) + metrics
    assert password_of(database.url) not in shown and str(server.port) not in shown
    assert Counter(row["username"] for row in rows) == Counter(["before", *names[:20]])
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"127.0.0.1:{server.port}/postgres" in logged  # the operator's log names it
    assert password_of(database.url) not in logged
    assert "works again" in logged


async def test_durable_logins_get_503_while_down_and_none_is_doubled(
    throwaway_database: Database,
) -> None:
    database, server = throwaway_database, throwaway_database.server
    assert server is not None
    config = database.config(
        LOGIN_LOG_DURABLE=True,
        LOGIN_LOG_MAX_PENDING=20,
        LOGIN_LOG_FULL_TIMEOUT=0.3,
        LOGIN_LOG_DATABASE_TIMEOUT=1,
    )
    async with create_app(config).test_app() as test_app:
        client = test_app.test_client()
        assert (await statuses_of(client, ["before"])) == {"before": 200}

        server.stop()
        names = [f"durable-down-{i:02d}" for i in range(25)]
        responses = await asyncio.gather(
            *(client.get(f"/login/?username={n}", scope_base=CLIENT) for n in names)
        )
        readyz = (await client.get("/readyz")).status_code
        server.start()
        await wait_until_ready(client)
        assert (await statuses_of(client, ["after"])) == {"after": 200}
        rows = await database.wait_for_rows(22)

    assert [response.status_code for response in responses] == [503] * 25
    assert readyz == 503
    counts = Counter(row["username"] for row in rows)
    # The 20 taken while down were kept and stored once; the 5 beyond the bound never taken.
    assert counts["before"] == counts["after"] == 1 and len(rows) == 22
    assert sum(counts[name] for name in names) == 20 and max(counts.values()) == 1


async def test_still_down_at_the_stop_each_record_is_logged_as_not_confirmed_written(
    throwaway_database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # A served process then exits with status 3, as for a file (tests/test_stop.py).
    database, server = throwaway_database, throwaway_database.server
    assert server is not None
    config = database.config(
        LOGIN_LOG_DRAIN_TIMEOUT=1, LOGIN_LOG_FULL_TIMEOUT=0.2, LOGIN_LOG_DATABASE_TIMEOUT=0.5
    )
    app = create_app(config)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await statuses_of(client, ["before"])) == {"before": 200}
        await database.wait_for_rows(1)
        server.stop()
        names = [f"unwritten-{i}" for i in range(3)]
        # The first answered 200 (taken before the writer knew), the others 503: all kept.
        statuses = await statuses_of(client, names)
    server.start()
    rows = await database.rows()

    assert statuses[names[0]] == 200
    marker = "login log: NOT CONFIRMED WRITTEN (not written within the drain timeout of 1.0 s): "
    lines = [
        line
        for record in caplog.records
        if record.levelno == logging.ERROR
        for line in record.getMessage().split("\n")
        if line.startswith(marker)
    ]
    assert [parse_line(line.removeprefix(marker)).username for line in lines] == names
    assert writer_of(app).unconfirmed == len(names)
    assert [row["username"] for row in rows] == ["before"]


async def test_a_hung_server_is_an_error_after_the_timeout_not_a_hang(
    throwaway_database: Database,
) -> None:
    database, server = throwaway_database, throwaway_database.server
    assert server is not None
    config = database.config(LOGIN_LOG_DATABASE_TIMEOUT=0.5, LOGIN_LOG_DRAIN_TIMEOUT=30)
    async with create_app(config).test_app() as test_app:
        client = test_app.test_client()
        assert (await statuses_of(client, ["before"])) == {"before": 200}
        await database.wait_for_rows(1)

        stopped = pause(server)  # every process, with the writer's connection open
        try:
            names = [f"hung-{i}" for i in range(10)]
            statuses = await statuses_of(client, names)
            await asyncio.sleep(1.5)
            health = await (await client.get("/healthz")).get_json()
        finally:
            resume(stopped)
        await wait_until_ready(client)
        rows = await database.wait_for_rows(11)

    assert set(statuses.values()) == {200}
    assert health["reasons"][0] == "writes are failing"
    assert health["last_error"] == "DatabaseError: no answer within 0.5 s"
    assert Counter(row["username"] for row in rows) == Counter(["before", *names])


async def test_a_commit_whose_answer_is_lost_is_not_doubled_by_the_resend(
    database: Database,
) -> None:
    proxy, url = await proxied(database.url)
    config = database.config(LOGIN_LOG_DATABASE_URL=url, LOGIN_LOG_DATABASE_TIMEOUT=0.3)
    try:
        async with create_app(config).test_app() as test_app:
            client = test_app.test_client()
            assert (await statuses_of(client, ["first"])) == {"first": 200}
            await database.wait_for_rows(1)

            proxy.lose_commit = "answer"
            assert (await statuses_of(client, ["lost-answer"])) == {"lost-answer": 200}
            await database.wait_for_rows(2)  # committed, and the writer never heard of it
            await asyncio.sleep(0.5)  # its attempts time out; they resend the same row
            health = await (await client.get("/healthz")).get_json()
            proxy.drop_replies = False
            await wait_until_ready(client)
            assert (await statuses_of(client, ["after"])) == {"after": 200}
            rows = await database.wait_for_rows(3)
            after = await (await client.get("/healthz")).get_json()
    finally:
        await proxy.close()
    assert health["reasons"] == ["writes are failing"]
    assert (after["written"], after["set_aside"]) == (3, 0)  # the resend is no refusal
    assert Counter(row["username"] for row in rows) == Counter(["first", "lost-answer", "after"])


async def test_a_table_that_takes_no_row_is_retried_and_nothing_set_aside(
    database: Database,
) -> None:
    # "permission denied for table" has the SQLSTATE of a row-level security
    # policy's refusal (42501), but no row is at fault: nothing may be set aside.
    await database.create_table()
    writer_url = await database.insert_only_role()
    role = database.roles[-1]
    config = database.config(LOGIN_LOG_DATABASE_URL=writer_url, LOGIN_LOG_DATABASE_TIMEOUT=1)
    async with create_app(config).test_app() as test_app:
        client = test_app.test_client()
        assert (await statuses_of(client, ["before"])) == {"before": 200}
        await database.wait_for_rows(1)

        await database.execute(f"REVOKE INSERT ON {database.table} FROM {role}")
        names = [f"revoked-{i}" for i in range(5)]
        responses = await asyncio.gather(
            *(client.get(f"/login/?username={name}", scope_base=CLIENT) for name in names)
        )
        async with asyncio.timeout(10):
            while (health := await (await client.get("/healthz")).get_json())["write_errors"] < 3:
                await asyncio.sleep(0.05)
        await database.execute(f"GRANT INSERT ON {database.table} TO {role}")
        await wait_until_ready(client)
        rows = await database.wait_for_rows(6)
        after = await (await client.get("/healthz")).get_json()

    assert [response.status_code for response in responses] == [200] * 5
    assert health["set_aside"] == after["set_aside"] == 0
    # The class and SQLSTATE only: the message names the table (or a role, a value).
    assert health["last_error"] == "DatabaseError: InsufficientPrivilegeError (SQLSTATE 42501)"
    assert Counter(row["username"] for row in rows) == Counter(["before", *names])
