"""``quart-app-loadtest --verify postgresql://…``: the table as the log to check."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from quart_app.tools.loadtest import LoadConfig, Logins, main, run_load, verify_log
from quart_app.tools.loadtest.sources import PostgresTable
from quart_app.tools.server import free_port

from helpers.liar import lying_server, to_table
from helpers.pg import Database, Proxy, changed_url, password_of
from helpers.server import refused, run_server


async def test_the_table_is_verified_and_its_faults_are_found(
    tmp_path: Path, database: Database
) -> None:
    with run_server(tmp_path, database.env()) as server:
        summary = await run_load(LoadConfig(server.url, requests=300, concurrency=20))
        assert server.stop() == 0, server.stderr
    assert summary.stem is not None
    source = PostgresTable(database.url, database.table, prefix=summary.stem)
    result = await verify_log(source, summary.logins(), settle=0)  # the server has stopped
    assert result.ok and result.logged_once == 300, result.to_dict()

    # One row lost, one stored twice: both are found.
    first, second = sorted(summary.acknowledged)[:2]
    await database.execute(f"DELETE FROM {database.table} WHERE username = $1", first)
    await database.execute(
        f"INSERT INTO {database.table} SELECT $1, username, logged_in_at, ip, host "
        f"FROM {database.table} WHERE username = $2",
        uuid.uuid4(),
        second,
    )
    source = PostgresTable(database.url, database.table, prefix=summary.stem)
    result = await verify_log(source, summary.logins(), max_wait=0.2, settle=0)
    assert (result.missing_examples, result.doubled_examples) == ((first,), (second,))


async def test_the_command_verifies_against_the_table(
    tmp_path: Path, database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    with run_server(tmp_path, database.env()) as server:
        argv = [server.url, "-n", "200", "-c", "10", "--json", "--run-id", "pg01"]
        argv += ["--verify", database.url, "--verify-table", database.table]
        assert await asyncio.to_thread(main, argv) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["verify"]["ok"] and report["verify"]["logged_once"] == 200
        # The same run id again would read as every login doubled: refused.
        with pytest.raises(SystemExit) as exit_info:
            await asyncio.to_thread(main, argv)
        assert exit_info.value.code == 2
        assert "run id 'pg01' is already in the log" in capsys.readouterr().err


async def test_a_login_stored_again_later_fails_verify(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 15 with the table: every login has its row the moment it is
    # answered, and a second row 1.5 s later.
    await database.create_table()
    pool = await asyncpg.create_pool(database.url, min_size=1, max_size=4)
    try:
        async with lying_server(to_table(pool, database.table), again_after=1.5) as url:
            argv = [url, "-n", "10", "--run-id", "late", "--verify", database.url]
            status = await asyncio.to_thread(main, [*argv, "--verify-table", database.table])
    finally:
        await pool.close()

    out = capsys.readouterr().out
    assert status == 1
    assert (
        "verify       FAILED: 10 acknowledged, 0 logged once, 0 missing, "
        "10 logged more often than sent"
    ) in out


async def test_the_command_says_when_the_table_does_not_exist(
    tmp_path: Path, database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    with run_server(tmp_path, database.env()) as server:
        argv = [server.url, "-n", "5", "--verify", database.url, "--verify-table", "nope"]
        status = await asyncio.to_thread(main, [*argv, "--verify-timeout", "0.2"])
    out, err = capsys.readouterr()
    assert status == 1
    assert "missing" not in out
    assert "cannot read the log to verify: the table 'nope' does not exist" in err


async def test_the_command_says_when_the_table_cannot_be_read(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    url = changed_url(database.url, port=free_port())
    with pytest.raises(SystemExit) as exit_info:
        await asyncio.to_thread(main, ["http://127.0.0.1:1", "-n", "1", "--verify", url])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "cannot read the log to verify: SourceError: cannot use the database" in err
    assert "ConnectionRefusedError" in err
    assert password_of(url) not in err


async def proxied(database: Database) -> tuple[Proxy, str]:
    """A proxy to ``database`` that takes one connection, then refuses; the URL through it."""
    parts = urlsplit(database.url)
    proxy = Proxy(parts.hostname or "", parts.port or 5432, accept_one=True)
    return proxy, changed_url(database.url, port=await proxy.start())


async def test_verify_reads_again_a_table_briefly_unreachable(database: Database) -> None:
    await database.create_table()
    proxy, url = await proxied(database)
    try:
        source = PostgresTable(url, database.table)
        assert (await source.read()).usernames == []  # the one connection it takes
        names = [f"unreachable-{i}" for i in range(3)]
        await database.execute(
            f"INSERT INTO {database.table} SELECT gen_random_uuid(), name, $2, NULL, 'web' "
            "FROM unnest($1::text[]) AS name",
            names,
            datetime.now(UTC),
        )
        # Only the test writes to the table: nothing comes later to wait for.
        logins = Logins.sent_once(names)
        verifying = asyncio.create_task(verify_log(source, logins, max_wait=10, settle=0))
        await asyncio.sleep(0.3)
        assert not verifying.done()  # refused meanwhile, and tried again
        await proxy.start(urlsplit(url).port or 0)
        result = await verifying
    finally:
        await proxy.close()
    assert result.ok and result.logged_once == 3, result.to_dict()


async def test_the_command_says_when_the_table_cannot_be_read_after_the_run(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy, url = await proxied(database)  # read before the run, refused after it
    argv = ["http://127.0.0.1:1", "-n", "1", "--verify", url, "--verify-timeout", "0.5"]
    try:
        status = await asyncio.to_thread(main, [*argv, "--verify-table", database.table])
    finally:
        await proxy.close()
    out, err = capsys.readouterr()
    assert status == 1
    assert "cannot read the log to verify: SourceError: cannot use the database" in err
    assert "ConnectionRefusedError" in err
    assert "Traceback" not in err and password_of(url) not in out + err


def test_the_command_never_shows_a_url_asyncpg_cannot_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # asyncpg ends the password at the first '@' and quotes the rest in its error.
    url = f"postgresql://w1:p@ss:Sekr3tPw@127.0.0.1:{free_port()}/postgres"
    err = refused(["http://127.0.0.1:1", "-n", "1", "--verify", url], capsys)
    assert "cannot read the log to verify: SourceError: the database URL has an '@'" in err
    assert "Sekr3t" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--verify", "log.txt", "--verify-table", "t"], "--verify-table needs --verify postgres"),
        (["--verify", "postgresql://h/db", "--verify-table", "T;"], "must be a lower-case table"),
    ],
)
def test_verify_table_needs_a_database_and_a_table_name(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(["http://127.0.0.1:1", "-n", "1", *argv], capsys)
    assert message in err


@pytest.mark.parametrize("scheme", ["POSTGRESQL", "Postgres", "postgres"])
def test_a_database_url_is_known_whatever_the_case_of_its_scheme(
    scheme: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # As libpq: not a log file named "POSTGRESQL:/u:...", found missing only after the run.
    url = f"{scheme}://u:Sekr3tPw@127.0.0.1:{free_port()}/db"
    err = refused(["http://127.0.0.1:1", "-n", "1", "--verify", url, "--verify-table", "t"], capsys)
    assert "cannot read the log to verify: SourceError: cannot use the database" in err
    assert "ConnectionRefusedError" in err
    assert "Sekr3t" not in err


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://u:Sekr3tPw@127.0.0.1:1/db",
        "mysql://u:Sekr3tPw@127.0.0.1:1/db",
        "file:///tmp/Sekr3tPw.txt",
    ],
)
def test_a_url_of_another_scheme_exits_2_before_the_run_without_showing_it(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(["http://127.0.0.1:1", "-n", "1", "--verify", url], capsys)
    assert "argument --verify: needs a log file or a postgresql:// URL, not a " in err
    assert "Sekr3t" not in err


async def test_the_command_verifies_against_a_url_of_upper_case_scheme(
    tmp_path: Path, database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    scheme, rest = database.url.split("://", 1)
    url = f"{scheme.upper()}://{rest}"
    with run_server(tmp_path, database.env()) as server:
        argv = [server.url, "-n", "20", "--json", "--verify", url, "--verify-table", database.table]
        assert await asyncio.to_thread(main, argv) == 0
    assert json.loads(capsys.readouterr().out)["verify"]["logged_once"] == 20
