"""The sealed table (issue 20): rows in PostgreSQL that nobody edits, removes or reorders unseen.

Real hypercorn with ``-w 2`` writing a real PostgreSQL table, then
``quart-app-log verify --key PUBLIC postgresql://...``: a clean run
verifies; a row updated, deleted, forged or moved is caught and named by
(stream, position, id); the newest rows deleted with their checkpoints are
caught against the stderr copies.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from pathlib import Path

import pytest

from quart_app.stores.pg_table import quoted

from helpers.pg import Database, connected
from helpers.seal_table import SealedRun, host_key, sealed_env, sealed_run
from helpers.server import run_server, send_logins
from helpers.trail import run_log
from helpers.verdicts import assert_recorded_once

pytestmark = pytest.mark.timeout(180)


async def test_a_clean_run_of_two_workers_verifies(tmp_path: Path, database: Database) -> None:
    run = await sealed_run(tmp_path, database, logins=400, workers=2)
    ran = run.verify()
    assert ran.status == 0, ran
    assert ran.out.count("; clean stop\n") == 2, ran.out
    assert "OK: 400 row(s) of 2 stream(s) read, every sealed row as sealed\n" in ran.out


@pytest.fixture
async def sealed(tmp_path: Path, database: Database) -> SealedRun:
    return await sealed_run(tmp_path, database, logins=300, workers=2)


async def test_an_update_of_one_field_is_caught_and_restoring_it_verifies_again(
    sealed: SealedRun,
) -> None:
    row = await sealed.row(7)
    table = quoted(sealed.database.table)
    await sealed.database.execute(
        f"UPDATE {table} SET username = 'mallory' WHERE id = $1", row["id"]
    )
    ran = sealed.verify()
    assert ran.status == 1, ran
    assert (
        f"FAILED: row ({row['stream']}, {row['position']}, {row['id']}): not the row sealed "
        "(changed, or put in another's place)\n"
    ) in ran.out
    assert ran.out.endswith("NOT VERIFIED\n")
    await sealed.database.execute(
        f"UPDATE {table} SET username = $2 WHERE id = $1", row["id"], row["username"]
    )
    assert sealed.verify().status == 0


async def test_a_deleted_row_is_caught_by_stream_and_position(sealed: SealedRun) -> None:
    row = await sealed.row(11)
    await sealed.database.execute(
        f"DELETE FROM {quoted(sealed.database.table)} WHERE id = $1", row["id"]
    )
    ran = sealed.verify()
    assert ran.status == 1, ran
    assert f"FAILED: row ({row['stream']}, {row['position']}, id unknown): deleted\n" in ran.out


async def test_a_forged_row_is_caught_wherever_it_is_put(sealed: SealedRun) -> None:
    row = await sealed.row(0)
    table = quoted(sealed.database.table)
    forged = "00000000-0000-7000-8000-000000000001"
    # After the stream's clean stop, in a stream of its own, and in no stream.
    await sealed.database.execute(
        f"INSERT INTO {table} (id, username, logged_in_at, ip, host, stream, position) "
        "SELECT $1::uuid, 'forged', now(), '192.0.2.66', host, stream, "
        "(SELECT max(position) + 1 FROM " + table + " WHERE stream = $2) "
        f"FROM {table} WHERE id = $3",
        forged,
        row["stream"],
        row["id"],
    )
    await sealed.database.execute(
        f"INSERT INTO {table} (id, username, logged_in_at, ip, host, stream, position) VALUES "
        "('00000000-0000-7000-8000-000000000002', 'forged', now(), NULL, 'h', 'host-a/x', 0), "
        "('00000000-0000-7000-8000-000000000003', 'forged', now(), NULL, 'h', NULL, NULL)"
    )
    ran = sealed.verify()
    assert ran.status == 1, ran
    assert f"({row['stream']}, " in ran.out and f"{forged}): after the clean stop" in ran.out
    assert "FAILED: stream host-a/x: no certificate" in ran.out
    assert (
        "FAILED: 1 row(s) belong to no stream, so nothing seals them (written before the table "
        "was sealed, or inserted by hand): ids 00000000-0000-7000-8000-000000000003\n"
    ) in ran.out


async def test_rows_swapped_between_positions_are_both_named(sealed: SealedRun) -> None:
    first, second = await sealed.row(3), await sealed.row(4)
    assert first["stream"] == second["stream"]
    table = quoted(sealed.database.table)
    await sealed.database.execute(f"UPDATE {table} SET position = -1 WHERE id = $1; ", first["id"])
    await sealed.database.execute(
        f"UPDATE {table} SET position = $2 WHERE id = $1", second["id"], first["position"]
    )
    await sealed.database.execute(
        f"UPDATE {table} SET position = $2 WHERE id = $1", first["id"], second["position"]
    )
    ran = sealed.verify()
    assert ran.status == 1, ran
    for row, position in ((second, first["position"]), (first, second["position"])):
        assert f"row ({row['stream']}, {position}, {row['id']}): not the row sealed" in ran.out


async def test_the_newest_rows_deleted_with_their_checkpoints_are_caught_by_the_copies(
    sealed: SealedRun,
) -> None:
    row = await sealed.row(0)
    table = sealed.database.table
    await sealed.database.execute(
        f"DELETE FROM {quoted(table)} WHERE stream = $1 AND position >= 10", row["stream"]
    )
    await sealed.database.execute(
        f"DELETE FROM {quoted(table + '_checkpoints')} WHERE stream = $1 AND seq > 0",
        row["stream"],
    )
    # Alone, the table looks like a stream that crashed: every prefix verifies.
    alone = sealed.verify()
    assert alone.status == 0, alone
    assert "10 row(s) after its last checkpoint are not sealed" in alone.out
    ran = sealed.verify("--checkpoint", sealed.copies())
    assert ran.status == 1, ran
    assert (f"FAILED: stream {row['stream']}: a checkpoint held elsewhere") in ran.out
    assert "is not in the checkpoints table: its newest rows were deleted" in ran.out


async def test_copies_of_an_untouched_table_are_all_found(sealed: SealedRun) -> None:
    ran = sealed.verify("--checkpoint", sealed.copies())
    assert ran.status == 0, ran
    notes = sealed.copies().read_text().count("login-log-checkpoint ")
    assert f"{notes:,} checkpoint(s) held elsewhere found in the table\n" in ran.out


async def test_purge_cuts_each_stream_at_a_checkpoint_and_verify_starts_there(
    tmp_path: Path, database: Database
) -> None:
    old = await sealed_run(tmp_path / "old", database, logins=200, workers=2)
    new = await sealed_run(
        tmp_path / "new", database, logins=300, workers=1, rounds=2, LOGIN_LOG_SEAL_INTERVAL="0.1"
    )
    table = quoted(database.table)
    async with connected(database.url) as connection:
        stream = await connection.fetchval(
            f"SELECT stream FROM {table} GROUP BY stream HAVING count(*) = 300"
        )
        cutoff = await connection.fetchval(
            f"SELECT logged_in_at FROM {table} WHERE stream = $1 AND position = 150", stream
        )
    ran = run_log(
        "purge", database.url, "--table", database.table, "--before", cutoff.isoformat(), "--yes"
    )
    assert ran.status == 0, ran
    assert "each stream cut at its last checkpoint before then (verify starts there)" in ran.out
    async with connected(database.url) as connection:
        left = await connection.fetch(f"SELECT stream, position, logged_in_at FROM {table}")
    assert {row["stream"] for row in left} == {stream}
    assert all(row["position"] < 150 or row["logged_in_at"] >= cutoff for row in left)
    assert len(left) == 150  # cut at the checkpoint between the two rounds
    both = SealedRun(database, old.publics + new.publics, tmp_path)
    verified = both.verify()
    assert verified.status == 0, verified
    assert verified.out.count("verified from the cut at position") == 3, verified.out
    assert both.verify("--checkpoint", new.copies()).status == 0


async def test_a_cut_mark_added_by_hand_hides_no_row_before_it(sealed: SealedRun) -> None:
    row = await sealed.row(0)
    table = sealed.database.table
    async with connected(sealed.database.url) as connection:
        size = await connection.fetchval(
            f"SELECT max(size) FROM {quoted(table + '_checkpoints')} WHERE stream = $1",
            row["stream"],
        )
    await sealed.database.execute(
        f"INSERT INTO {quoted(table + '_checkpoints')} (stream, seq, size, note) "
        "VALUES ($1, -1 - $2::int8, $2::int8, 'cut')",
        row["stream"],
        size,
    )
    await sealed.database.execute(
        f"UPDATE {quoted(table)} SET username = 'mallory' WHERE id = $1", row["id"]
    )
    ran = sealed.verify()
    assert ran.status == 1, ran
    assert f"row ({row['stream']}, 0, {row['id']}): before the cut at position" in ran.out


async def test_two_hosts_at_once_each_verified_by_its_own_key(
    tmp_path: Path, database: Database
) -> None:
    keys = [host_key(tmp_path / name, f"{name}/login-log") for name in ("host-a", "host-b")]
    runs = []
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                run_server(
                    tmp_path / name,
                    sealed_env(database, key, LOGIN_LOG_HOST=name),
                    workers=2,
                )
            )
            for name, (key, _) in zip(("host-a", "host-b"), keys, strict=True)
        ]
        runs = await asyncio.gather(
            *(
                send_logins(server.url, [f"{number}-{i}" for i in range(400)])
                for number, server in enumerate(servers)
            )
        )
        stderr = []
        for server in servers:
            assert server.stop() == 0, server.stderr
            stderr.append(server.stderr)
    await assert_recorded_once(database, *runs)
    both = SealedRun(database, [public for _, public in keys], tmp_path, stderr=stderr)
    ran = both.verify("--checkpoint", both.copies())
    assert ran.status == 0, ran
    assert ran.out.count("; clean stop\n") == 4, ran.out
    assert "OK: 800 row(s) of 4 stream(s) read" in ran.out
    only_a = SealedRun(database, [keys[0][1]], tmp_path)
    ran = only_a.verify()
    assert ran.status == 1
    assert ran.out.count("its certificate is signed by no --key given") == 2, ran.out


async def test_a_row_at_a_position_no_stream_gives_is_caught_in_a_stream_with_no_row(
    tmp_path: Path, database: Database
) -> None:
    key, public = host_key(tmp_path / "keys")
    with run_server(tmp_path, sealed_env(database, key), workers=1) as server:
        assert server.stop() == 0, server.stderr
    empty = SealedRun(database, [public], tmp_path)
    assert empty.verify().status == 0
    table = quoted(database.table)
    async with connected(database.url) as connection:
        notes = quoted(f"{database.table}_checkpoints")
        stream = await connection.fetchval(f"SELECT stream FROM {notes}")
    forged = "00000000-0000-7000-8000-00000000000a"
    await database.execute(
        f"INSERT INTO {table} (id, username, logged_in_at, ip, host, stream, position) "
        "VALUES ($1, 'forged', now(), NULL, 'h', $2, -1)",
        forged,
        stream,
    )
    ran = empty.verify()
    assert ran.status == 1, ran
    assert f"FAILED: row ({stream}, -1, {forged}): inserted\n" in ran.out


async def test_a_role_that_may_only_insert_writes_a_sealed_table(
    tmp_path: Path, database: Database
) -> None:
    from quart_app.stores.pg_table import create_checkpoints_sql, create_table_sql

    await database.execute(create_table_sql(database.table, sealed=True))
    await database.execute(create_checkpoints_sql(database.table))
    url = await database.insert_only_role()
    role = database.roles[-1]
    await database.execute(f"GRANT INSERT ON {quoted(database.table + '_checkpoints')} TO {role}")
    key, public = host_key(tmp_path / "keys")
    run = SealedRun(database, [public], tmp_path)
    env = sealed_env(database, key, LOGIN_LOG_DATABASE_URL=url)
    with run_server(tmp_path, env, workers=2) as server:
        run.runs.append(await send_logins(server.url, [f"writer-{i}" for i in range(200)]))
        assert server.stop() == 0, server.stderr
    assert run.runs[0].statuses == {200: 200}
    ran = run.verify()
    assert ran.status == 0, ran
    assert "OK: 200 row(s) of 2 stream(s) read" in ran.out
