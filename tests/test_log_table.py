"""``quart-app-log`` against the PostgreSQL table: the same records as from the file, the
password kept out of sight, and ``purge`` deleting only older rows."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from quart_app.stores.pg_table import quoted
from quart_app.tools.server import free_port

from helpers.pg import Database, password_of
from helpers.server import run_server
from helpers.trail import assert_read_back, hostile_usernames, run_log, send_as_clients


async def _log(*argv: str | Path, **kwargs: object):
    return await asyncio.to_thread(run_log, *argv, **kwargs)


async def test_search_and_stats_read_back_the_logins_sent(
    database: Database, tmp_path: Path
) -> None:
    env = database.env(LOGIN_LOG_HOST="web-1", PROXY_TRUSTED_HOPS="1")
    names = hostile_usernames()
    with run_server(tmp_path, env) as server:
        sent = await send_as_clients(server.url, names)
        assert server.stop() == 0
    table = ("--table", database.table)
    ran = await _log("search", database.url, *table, "--format", "jsonl")
    assert (ran.status, ran.err) == (0, "")
    found = ran.jsonl()
    assert_read_back(found, sent)
    assert {item["source"] for item in found} == {"web-1"}
    for login in sent:
        one = await _log("search", database.url, *table, f"--user={login.username}", "-n", "1")
        assert one.status == 0, one.err
        assert (
            one.out == (await _log("search", database.url, *table, f"--user={login.username}")).out
        )
    by_network = await _log(
        "search",
        database.url,
        *table,
        "--ip",
        "203.0.113.0/24",
        "--since",
        "1h",
        "--format",
        "jsonl",
    )
    assert_read_back(by_network.jsonl(), [s for s in sent if s.ip.startswith("203.0.113.")])
    v6 = await _log("search", database.url, *table, "--ip", "2001:db8::/48", "--format", "jsonl")
    assert_read_back(v6.jsonl(), [s for s in sent if s.ip.startswith("2001:db8:")])
    last = await _log("search", database.url, *table, "-n", "4", "-r", "--format", "jsonl")
    assert_read_back(last.jsonl(), sent[-4:][::-1])
    times = [item["time"] for item in found]
    window = await _log(
        "search",
        database.url,
        *table,
        "--since",
        times[2],
        "--until",
        times[5],
        "--format",
        "jsonl",
    )
    assert_read_back(window.jsonl(), sent[2:5])
    csv_rows = (await _log("search", database.url, *table, "--format", "csv")).csv()
    assert [row["source"] for row in csv_rows] == ["web-1"] * len(sent)
    stats = await _log("stats", database.url, *table)
    assert stats.status == 0
    assert f"logins              {len(sent):,}" in stats.out.splitlines()
    assert f"distinct users      {len(set(names)):,}" in stats.out.splitlines()
    nobody = await _log("search", database.url, *table, "--user", "nobody-at-all")
    assert (nobody.status, nobody.out) == (1, "")


async def test_the_password_may_come_from_pgpassword_or_a_passfile(
    database: Database, tmp_path: Path
) -> None:
    await database.create_table()
    parts = urlsplit(database.url)
    bare = f"postgresql://{parts.username}@{parts.hostname}:{parts.port}{parts.path}"
    password = password_of(database.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    refused = await _log("search", bare, "--table", database.table, env=env)
    assert refused.status == 2
    assert "cannot use the database" in refused.err
    with_variable = await _log(
        "search", bare, "--table", database.table, env={**env, "PGPASSWORD": password}
    )
    assert (with_variable.status, with_variable.err) == (1, "")  # read, and nothing in it
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{parts.hostname}:{parts.port}:*:{parts.username}:{password}\n")
    passfile.chmod(0o600)
    with_file = await _log(
        "search", bare, "--table", database.table, env={**env, "PGPASSFILE": str(passfile)}
    )
    assert (with_file.status, with_file.err) == (1, "")


async def test_an_unreachable_database_is_status_2_and_never_shows_the_password() -> None:
    url = f"postgresql://app:Sekr3t-pw@127.0.0.1:{free_port()}/audit"
    for argv in (["search", url], ["stats", url], ["purge", url, "--before", "30d", "--yes"]):
        ran = await _log(*argv)
        assert ran.status == 2, argv
        assert "cannot use the database app@127.0.0.1" in ran.err
        assert "Sekr3t" not in ran.err + ran.out


async def _rows_at(database: Database, times: list[datetime]) -> None:
    await database.create_table()
    for number, time in enumerate(times):
        await database.execute(
            f"INSERT INTO {quoted(database.table)} (id, username, logged_in_at, ip, host) "
            "VALUES ($1, $2, $3, NULL, 'h')",
            uuid.uuid4(),
            f"user-{number}",
            time,
        )


async def _usernames(database: Database) -> list[str]:
    return sorted(row["username"] for row in await database.rows())


async def test_purge_deletes_only_the_older_rows(database: Database) -> None:
    cut = datetime(2026, 1, 1, tzinfo=UTC)
    times = [cut - timedelta(days=400), cut - timedelta(microseconds=1), cut, cut + timedelta(1)]
    await _rows_at(database, times)
    table = ("--table", database.table)
    dry = await _log("purge", database.url, *table, "--before", "2026-01-01", "--dry-run")
    assert (dry.status, dry.err) == (0, "")
    assert dry.out == (
        f"would delete 2 rows older than 2026-01-01 00:00:00+00:00 from {database.table}\n"
    )
    asked = await _log("purge", database.url, *table, "--before", "2026-01-01")
    assert asked.status == 2
    assert "no terminal to ask whether to delete: add --yes" in asked.err
    assert await _usernames(database) == ["user-0", "user-1", "user-2", "user-3"]
    # Eight in the morning in Shanghai is midnight UTC.
    done = await _log("purge", database.url, *table, "--before", "2026-01-01T08:00+08:00", "--yes")
    assert (done.status, done.err) == (0, "")
    assert (
        done.out == f"deleted 2 rows older than 2026-01-01 00:00:00+00:00 from {database.table}\n"
    )
    assert await _usernames(database) == ["user-2", "user-3"]
    again = await _log("purge", database.url, *table, "--before", "2026-01-01", "--yes")
    assert (again.status, again.out) == (
        1,
        f"deleted 0 rows older than 2026-01-01 00:00:00+00:00 from {database.table}\n",
    )


async def test_purge_deletes_in_batches_and_refuses_files_and_insert_only_roles(
    database: Database, tmp_path: Path
) -> None:
    old = datetime(2020, 1, 1, tzinfo=UTC)
    await _rows_at(
        database, [old + timedelta(seconds=n) for n in range(4500)] + [datetime.now(UTC)]
    )
    writer = await database.insert_only_role()
    refused = await _log("purge", writer, "--table", database.table, "--before", "7d", "--yes")
    assert refused.status == 2
    assert "InsufficientPrivilegeError" in refused.err
    assert password_of(writer) not in refused.err
    done = await _log("purge", database.url, "--table", database.table, "--before", "7d", "--yes")
    assert done.status == 0
    assert done.out.startswith("deleted 4,500 rows older than ")
    assert await _usernames(database) == ["user-4500"]
    files = await _log("purge", tmp_path / "login_log.txt", "--before", "7d", "--yes")
    assert files.status == 2
    assert "log files are purged by logrotate (docs/deploying.md)" in files.err
