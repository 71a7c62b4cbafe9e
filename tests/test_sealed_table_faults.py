"""A sealed table through faults (issue 20): each leaves a table that verifies.

A lost commit reply, ``pg_terminate_backend`` mid-load, a database restart,
a spooled outage and SIGKILL of a worker: the acknowledged logins are in the
table once, and ``verify`` proves every sealed row; a killed worker's stream
is reported as ended without a clean stop, and a row the table refuses for
good as set aside, never as tampering.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from pathlib import Path

import pytest

from quart_app.records import LoginRecord
from quart_app.seal.merkle import leaf_hash
from quart_app.seal.rows import LEAF_SQL, leaf
from quart_app.stores.pg_table import quoted

from helpers.pg import Database, connected, proxied, terminate_app_connections
from helpers.seal_table import SealedRun, host_key, sealed_env
from helpers.server import run_server, send_logins
from helpers.verdicts import assert_recorded_once

pytestmark = pytest.mark.timeout(240)


async def sealed_up_to(database: Database, size: int, timeout: float = 30) -> None:
    """Wait until the checkpoints table holds a checkpoint of ``size`` positions."""
    table = quoted(f"{database.table}_checkpoints")
    async with asyncio.timeout(timeout), connected(database.url) as connection:
        while (await connection.fetchval(f"SELECT max(size) FROM {table}") or 0) < size:
            await asyncio.sleep(0.1)


def verified(run: SealedRun, *, clean: int) -> str:
    """``verify``'s output, asserting it verified, with ``clean`` streams stopped cleanly."""
    ran = run.verify("--checkpoint", run.copies())
    assert ran.status == 0, ran
    assert ran.out.count("; clean stop\n") == clean, ran.out
    assert "FAILED" not in ran.out
    return ran.out


async def test_leaves_made_by_sql_are_those_python_makes(database: Database) -> None:
    from datetime import UTC, datetime
    from uuid import uuid4

    table = quoted(database.table)
    await database.execute(
        f"CREATE TABLE {table} (id uuid, username text, logged_in_at timestamptz, ip inet, "
        "host text)"
    )
    rows = [
        LoginRecord("张三", datetime(2026, 12, 6, 8, 0, 0, 123456, tzinfo=UTC), "192.0.2.1"),
        LoginRecord("o'brien,\\x", datetime(1999, 1, 1, tzinfo=UTC), "2001:db8::1"),
        LoginRecord("mapped", datetime(2300, 1, 1, tzinfo=UTC), "::ffff:192.0.2.1"),
        LoginRecord("😀 nobody", datetime(2026, 1, 1, tzinfo=UTC), "-"),
    ]
    ids = [uuid4() for _ in rows]
    async with connected(database.url) as connection:
        for id_, row in zip(ids, rows, strict=True):
            await connection.execute(
                f"INSERT INTO {table} VALUES ($1, $2, $3, $4, 'host é')",
                id_,
                row.username,
                row.time,
                None if row.ip == "-" else row.ip,
            )
        found = {
            record["id"]: record["leaf"]
            for record in await connection.fetch(f"SELECT id, {LEAF_SQL} AS leaf FROM {table}")
        }
    for id_, row in zip(ids, rows, strict=True):
        assert found[id_] == leaf(id_, row, "host é"), row
    # The mapped address is not the IPv4 one, though both are 16 bytes alike.
    assert leaf_hash(found[ids[2]]) != leaf_hash(
        leaf(ids[2], rows[2]._replace(ip="192.0.2.1"), "host é")
    )


async def test_a_worker_killed_mid_load_is_a_stream_without_a_clean_stop(
    tmp_path: Path, database: Database
) -> None:
    key, public = host_key(tmp_path / "keys")
    run = SealedRun(database, [public], tmp_path)
    names = [f"killed-{i}" for i in range(1500)]
    with run_server(tmp_path, sealed_env(database, key), workers=2) as server:
        victim = server.workers()[0]
        run.runs.append(await send_logins(server.url, names, when_half_done=victim.kill))
        assert server.stop() == 0, server.stderr
        run.stderr.append(server.stderr)
    assert run.runs[0].acknowledged
    await assert_recorded_once(database, *run.runs)
    ran = run.verify("--checkpoint", run.copies())
    assert ran.status == 0, ran
    assert "FAILED" not in ran.out
    assert ran.out.count("; no clean stop\n") == 1, ran.out
    assert ran.out.count("; clean stop\n") >= 1, ran.out


async def test_a_spooled_outage_verifies_once_forwarded(
    tmp_path: Path, throwaway_database: Database
) -> None:
    database, postgres = throwaway_database, throwaway_database.server
    assert postgres is not None
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    key, public = host_key(tmp_path / "keys")
    run = SealedRun(database, [public], tmp_path)
    env = sealed_env(database, key, LOGIN_LOG_SPOOL_DIR=str(spool))

    async def outage() -> None:
        await asyncio.to_thread(postgres.stop)
        try:
            run.runs.append(await send_logins(server.url, [f"away-{i}" for i in range(300)]))
            await asyncio.sleep(2)
        finally:
            await asyncio.to_thread(postgres.start)

    started: list[asyncio.Task[None]] = []
    with run_server(tmp_path, env, workers=2) as server:
        run.runs.append(
            await send_logins(
                server.url,
                [f"spooled-{i}" for i in range(1500)],
                when_half_done=lambda: started.append(asyncio.create_task(outage())),
            )
        )
        await asyncio.wait_for(asyncio.gather(*started), timeout=60)
        await database.wait_for_rows(1800, timeout=60)
        await asyncio.sleep(2)  # the last checkpoints of the forwarded rows
        assert server.stop() == 0, server.stderr
        run.stderr.append(server.stderr)
    for summary in run.runs:
        assert set(summary.statuses) == {200}, summary.statuses
    assert "they go to the spool" in run.stderr[0]
    await assert_recorded_once(database, *run.runs)
    verified(run, clean=2)


async def test_connections_killed_and_a_database_restart_mid_load_verify(
    tmp_path: Path, throwaway_database: Database
) -> None:
    database, postgres = throwaway_database, throwaway_database.server
    assert postgres is not None
    key, public = host_key(tmp_path / "keys")
    run = SealedRun(database, [public], tmp_path)
    env = sealed_env(database, key, LOGIN_LOG_DURABLE="false")

    async def faults() -> None:
        assert await terminate_app_connections(database.url) >= 2
        await asyncio.sleep(0.3)
        await asyncio.to_thread(postgres.stop)
        await asyncio.sleep(1)
        await asyncio.to_thread(postgres.start)

    started: list[asyncio.Task[None]] = []
    with run_server(tmp_path, env, workers=2) as server:
        run.runs.append(
            await send_logins(
                server.url,
                [f"restart-{i}" for i in range(2000)],
                when_half_done=lambda: started.append(asyncio.create_task(faults())),
            )
        )
        await asyncio.wait_for(asyncio.gather(*started), timeout=60)
        acknowledged = len(run.runs[0].acknowledged)
        await database.wait_for_rows(acknowledged, timeout=60)
        assert server.stop() == 0, server.stderr
        run.stderr.append(server.stderr)
    await assert_recorded_once(database, *run.runs)
    verified(run, clean=2)


async def test_a_lost_commit_reply_and_a_row_set_aside_verify(
    tmp_path: Path, database: Database
) -> None:
    proxy, url = await proxied(database.url)
    key, public = host_key(tmp_path / "keys")
    run = SealedRun(database, [public], tmp_path)
    env = sealed_env(database, key, LOGIN_LOG_DATABASE_URL=url, LOGIN_LOG_DATABASE_TIMEOUT="0.5")
    table = quoted(database.table)
    try:
        with ExitStack() as stack:
            server = await asyncio.to_thread(stack.enter_context, run_server(tmp_path, env))
            run.runs.append(await send_logins(server.url, ["first"]))
            # A row the table refuses for good, from now on.
            await database.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT no_refused CHECK (username <> 'refused')"
            )
            run.runs.append(
                await send_logins(server.url, ["before", "refused", "after"], concurrency=1)
            )
            proxy.lose_commit = "answer"
            run.runs.append(await send_logins(server.url, ["lost-reply"]))
            await asyncio.sleep(1)
            proxy.drop_replies = False
            run.runs.append(await send_logins(server.url, [f"then-{i}" for i in range(50)]))
            # 55 positions: 54 rows and the one set aside; sealed once the notes get through.
            await sealed_up_to(database, 55)
            assert server.stop() == 0, server.stderr
            run.stderr.append(server.stderr)
    finally:
        await proxy.close()
    assert proxy.lose_commit is None
    rows = await database.rows()
    names = [row["username"] for row in rows]
    assert names.count("lost-reply") == 1 and "refused" not in names
    ran = run.verify("--checkpoint", run.copies())
    assert ran.status == 0, ran
    assert "1 row(s) set aside (the table refused them; not tampering)" in ran.out
    assert "; clean stop\n" in ran.out, run.stderr


async def test_checkpoints_the_table_never_got_prove_the_rows_from_the_stderr_copies(
    tmp_path: Path, database: Database
) -> None:
    key, public = host_key(tmp_path / "keys")
    run = SealedRun(database, [public], tmp_path)
    notes = quoted(f"{database.table}_checkpoints")
    with run_server(tmp_path, sealed_env(database, key), workers=1) as server:
        run.runs.append(await send_logins(server.url, ["first"]))
        await sealed_up_to(database, 1)
        # From now on the checkpoints table refuses every note: they are on stderr only.
        database.cleanup.append("DROP FUNCTION IF EXISTS refuse_notes() CASCADE")
        await database.execute(
            "CREATE FUNCTION refuse_notes() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'no notes'; END $$"
        )
        await database.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON {notes} "
            "FOR EACH ROW EXECUTE FUNCTION refuse_notes()"
        )
        run.runs.append(await send_logins(server.url, [f"then-{i}" for i in range(99)]))
        assert server.stop() == 0, server.stderr
        run.stderr.append(server.stderr)
    assert "could not be stored" in run.stderr[0]
    alone = run.verify()
    assert alone.status == 0, alone
    assert "99 row(s) after its last checkpoint are not sealed" in alone.out
    out = verified(run, clean=1)
    assert "100 row(s), sealed up to position 100" in out
    assert "not sealed" not in out
    table = quoted(database.table)
    await database.execute(
        f"INSERT INTO {table} (id, username, logged_in_at, ip, host, stream, position) "
        f"SELECT gen_random_uuid(), 'forged', now(), NULL, host, stream, 100 FROM {table} LIMIT 1"
    )
    ran = run.verify("--checkpoint", run.copies())
    assert ran.status == 1, ran
    assert "1 row(s) after the clean stop at position 100 held elsewhere: inserted" in ran.out
