"""Rows the insert skips without an error: never counted as stored.

``ON CONFLICT DO NOTHING`` skips a row that a unique index added while serving
refuses, a ``BEFORE INSERT`` trigger that returns NULL skips it, and a ``DO
INSTEAD NOTHING`` rule skips every row: the statement succeeds all the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, datetime

import pytest

from quart_app import create_app
from quart_app.records import LoginRecord
from quart_app.stores.postgres import DatabaseError, PostgresStore

from helpers.pg import CLIENT, Database, proxied


async def status_of(client, name: str) -> int:
    """Log ``name`` in; the status."""
    return (await client.get(f"/login/?username={name}", scope_base=CLIENT)).status_code


def set_aside_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    """The writer's ERROR lines for records of ``name`` it set aside."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR
        and "record set aside" in r.getMessage()
        and f"用户名:{name}," in r.getMessage()
    ]


async def skip_in_trigger(database: Database, condition: str) -> None:
    """A ``BEFORE INSERT`` trigger that returns NULL, skipping the row, when ``condition`` holds."""
    function = f"{database.table}_skip"
    database.cleanup.append(f"DROP FUNCTION IF EXISTS {function}() CASCADE")
    await database.execute(
        f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF {condition} THEN RETURN NULL; END IF; RETURN NEW; END $$;"
        f"CREATE TRIGGER skip BEFORE INSERT ON {database.table} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()"
    )


async def wait_until_ready(client, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while (await client.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.05)


async def health_once(client, condition, timeout: float = 10) -> dict:
    """``/healthz``'s body once ``condition(body)`` holds."""
    async with asyncio.timeout(timeout):
        while not condition(health := await (await client.get("/healthz")).get_json()):
            await asyncio.sleep(0.05)
    return health


@pytest.mark.parametrize("role", ["owner", "insert-only"])
async def test_a_unique_index_added_while_serving_sets_aside_the_logins_it_skips(
    database: Database, caplog: pytest.LogCaptureFixture, role: str
) -> None:
    # The bug report's scenario: ON CONFLICT DO NOTHING, with no conflict
    # target, skips alice's later logins; they must not be answered 200.
    await database.create_table()
    url = await database.insert_only_role() if role == "insert-only" else database.url
    app = create_app(database.config(LOGIN_LOG_DATABASE_URL=url, LOGIN_LOG_DURABLE=True))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        statuses = [await status_of(client, "alice")]
        await database.execute(f"CREATE UNIQUE INDEX ON {database.table} (username)")
        statuses += [await status_of(client, "alice") for _ in range(3)]
        health = await (await client.get("/healthz")).get_json()
    assert statuses == [200, 503, 503, 503]
    assert [row["username"] for row in await database.rows()] == ["alice"]
    assert (health["set_aside"], health["written"]) == (3, 1)
    assert len(set_aside_lines(caplog, "alice")) == 3


@pytest.mark.parametrize("durable", [False, True], ids=["default", "durable"])
@pytest.mark.parametrize("skip", ["unique-index", "trigger"])
async def test_a_login_the_insert_skips_is_set_aside_logged_and_counted(
    database: Database, caplog: pytest.LogCaptureFixture, skip: str, durable: bool
) -> None:
    await database.create_table()
    writer_url = await database.insert_only_role()
    app = create_app(database.config(LOGIN_LOG_DATABASE_URL=writer_url, LOGIN_LOG_DURABLE=durable))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        statuses = [await status_of(client, "repeat")]
        await database.wait_for_rows(1)
        if skip == "unique-index":
            await database.execute(f"CREATE UNIQUE INDEX ON {database.table} (username)")
        else:
            await skip_in_trigger(database, "NEW.username = 'repeat'")
        statuses += [await status_of(client, name) for name in ("repeat", "other")]
        await database.wait_for_rows(2)
        health = await health_once(client, lambda body: body["written"] + body["set_aside"] == 3)
        metrics = await (await client.get("/metrics")).get_data(as_text=True)
    # Without durable mode the skipped login was answered when queued: its
    # ERROR line is all that is left of it, as for a row refused with an error.
    assert statuses == [200, 503 if durable else 200, 200]
    assert [row["username"] for row in await database.rows()] == ["repeat", "other"]
    assert (health["set_aside"], health["written"]) == (1, 2)
    assert 'quart_app_login_records_set_aside_total{app="quart_app.app"} 1.0' in metrics
    assert len(set_aside_lines(caplog, "repeat")) == 1


async def test_a_batch_stores_every_row_but_those_skipped_or_refused(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await database.create_table()
    await database.execute(f"ALTER TABLE {database.table} ADD CHECK (username <> 'refused')")
    await skip_in_trigger(database, "NEW.username LIKE 'skipped%'")
    # Refused only at COMMIT, by a deferred constraint trigger.
    late = f"{database.table}_late"
    database.cleanup.append(f"DROP FUNCTION IF EXISTS {late}() CASCADE")
    await database.execute(
        f"CREATE FUNCTION {late}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.username = 'late' THEN RAISE EXCEPTION 'too late'; END IF; RETURN NULL; END $$;"
        f"CREATE CONSTRAINT TRIGGER late AFTER INSERT ON {database.table} "
        f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {late}()"
    )
    store = PostgresStore(await database.insert_only_role(), table=database.table)
    await store.open()
    # Added while serving: the check at start would refuse the table.
    await database.execute(f"CREATE UNIQUE INDEX ON {database.table} (username)")
    now = datetime.now(UTC)
    names = [f"ok-{i}" for i in range(9)]
    ok = [LoginRecord(name, now, "192.0.2.1") for name in names]
    bad = [
        LoginRecord("skipped-1", now, "192.0.2.1"),  # the trigger returns NULL
        LoginRecord("refused", now, "192.0.2.1"),  # the CHECK raises
        LoginRecord("ok-2", now, "192.0.2.2"),  # the unique index: ok-2 is there
        LoginRecord("late", now, "192.0.2.1"),  # the COMMIT fails
        LoginRecord("skipped-2", now, "192.0.2.1"),
    ]
    try:
        batch = [*ok[:2], bad[0], *ok[2:4], bad[1], ok[4], bad[2], ok[5], bad[3], *ok[6:], bad[4]]
        set_aside = await store.write(store.prepare(batch))
    finally:
        await store.close()
    assert set_aside == bad
    assert sorted((row["username"], str(row["ip"])) for row in await database.rows()) == [
        (name, "192.0.2.1") for name in names
    ]
    refusals = [r.getMessage() for r in caplog.records if "refuses a record" in r.getMessage()]
    assert len(refusals) == 5
    assert "CheckViolationError" in refusals[1] and "RaiseError" in refusals[3]
    assert all("skipped without an error" in refusals[i] for i in (0, 2, 4))


UNDO = {"rule": "DROP RULE skip_all ON {table}", "trigger": "DROP TRIGGER skip ON {table}"}


@pytest.mark.parametrize("durable", [False, True], ids=["default", "durable"])
@pytest.mark.parametrize("takes_none", ["rule", "trigger"])
async def test_a_table_that_skips_every_row_is_retried_and_nothing_set_aside(
    database: Database, takes_none: str, durable: bool
) -> None:
    # The table takes no row now, as when INSERT is revoked: the fault is the
    # table's, not the rows'. The writer retries; nothing is set aside or lost.
    await database.create_table()
    writer_url = await database.insert_only_role()
    config = database.config(
        LOGIN_LOG_DATABASE_URL=writer_url,
        LOGIN_LOG_DURABLE=durable,
        LOGIN_LOG_FULL_TIMEOUT=0.5,
        LOGIN_LOG_DATABASE_TIMEOUT=1,
    )
    async with create_app(config).test_app() as test_app:
        client = test_app.test_client()
        assert await status_of(client, "before") == 200
        await database.wait_for_rows(1)
        if takes_none == "rule":
            await database.execute(
                f"CREATE RULE skip_all AS ON INSERT TO {database.table} DO INSTEAD NOTHING"
            )
        else:
            await skip_in_trigger(database, "true")
        names = [f"skipped-{i}" for i in range(5)]
        statuses = await asyncio.gather(*(status_of(client, name) for name in names))
        health = await health_once(client, lambda body: body["write_errors"] >= 3)
        readyz = await client.get("/readyz")
        await database.execute(UNDO[takes_none].format(table=database.table))
        await wait_until_ready(client)
        assert await status_of(client, "after") == 200
        rows = await database.wait_for_rows(7)
        after = await (await client.get("/healthz")).get_json()
    # Durable logins could not be confirmed in time: 503, and they are stored
    # once the table takes rows again ("may or may not").
    assert statuses == [503 if durable else 200] * 5
    assert readyz.status_code == 503
    assert "writes are failing" in await readyz.get_data(as_text=True)
    assert health["set_aside"] == after["set_aside"] == 0
    assert health["last_error"].startswith("DatabaseError: the table takes no row")
    assert after["written"] == 7
    assert Counter(row["username"] for row in rows) == Counter(["before", *names, "after"])


@pytest.mark.parametrize("meanwhile", [False, True], ids=["alone", "unique-index-meanwhile"])
@pytest.mark.parametrize("lost", ["answer", "request"])
async def test_a_durable_login_whose_commit_is_lost_is_stored_once_and_told_honestly(
    database: Database, caplog: pytest.LogCaptureFixture, lost: str, meanwhile: bool
) -> None:
    # The COMMIT of its batch reached the server and the answer was lost
    # ("answer"), or it never reached it ("request"). The writer resends on a
    # new connection and must tell which: a row there is never set aside as
    # skipped, a row not there is stored. Only when a unique index added
    # meanwhile skips the row with a new id too can it not tell: "may or may not".
    await database.create_table()
    writer_url = await database.insert_only_role()
    proxy, url = await proxied(writer_url)
    config = database.config(
        LOGIN_LOG_DATABASE_URL=url,
        LOGIN_LOG_DURABLE=True,
        LOGIN_LOG_DATABASE_TIMEOUT=0.3,
        LOGIN_LOG_FULL_TIMEOUT=15,
    )
    try:
        async with create_app(config).test_app() as test_app:
            client = test_app.test_client()
            assert await status_of(client, "first") == 200
            proxy.lose_commit = "answer" if lost == "answer" else "request"
            answer = asyncio.create_task(status_of(client, "lost"))
            await health_once(client, lambda body: body["write_errors"] >= 1)
            if meanwhile:
                await database.execute(f"CREATE UNIQUE INDEX ON {database.table} (username)")
            proxy.drop_replies = False
            status = await answer
            health = await (await client.get("/healthz")).get_json()
    finally:
        await proxy.close()
    rows = [row["username"] for row in await database.rows()]
    unknown = lost == "answer" and meanwhile
    assert (status, rows) == (503 if unknown else 200, ["first", "lost"])
    assert (health["set_aside"], health["written"]) == ((1, 1) if unknown else (0, 2))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    # The record once, set aside, after why: never also as NOT CONFIRMED WRITTEN.
    about_it = [m for m in errors if "用户名:lost," in m]
    assert len(about_it) == unknown
    if unknown:
        [why] = [m for m in errors if "cannot tell whether 1 records were stored" in m]
        assert "may or may not be stored" in why
        assert "record set aside by the store" in about_it[0]


async def test_a_batch_whose_commit_answer_is_lost_is_found_stored_though_a_row_is_refused_now(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # Resent, the batch is refused for one row a CHECK added meanwhile refuses
    # (NOT VALID: the row is there already). Its other rows tell that it was
    # committed: nothing is set aside, nothing stored twice.
    await database.create_table()
    writer_url = await database.insert_only_role()
    proxy, url = await proxied(writer_url)
    store = PostgresStore(url, table=database.table, timeout=0.3)
    now = datetime.now(UTC)
    names = [f"user-{i}" for i in range(8)]
    try:
        await store.open()
        batch = store.prepare([LoginRecord(name, now, "192.0.2.1") for name in names])
        proxy.lose_commit = "answer"
        with pytest.raises(DatabaseError, match=r"no answer within 0\.3 s"):
            await store.write(batch)
        await database.execute(
            f"ALTER TABLE {database.table} ADD CHECK (username <> 'user-5') NOT VALID"
        )
        proxy.drop_replies = False
        set_aside = await store.write(batch)
    finally:
        await store.close()
        await proxy.close()
    assert set_aside == []
    assert sorted(row["username"] for row in await database.rows()) == names
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
