"""Reading the trail: ``python -m bench.trail files|table|purge``.

* ``files``: ``quart-app-log search --user NAME`` over a log of ``--lines``
  lines (10 million by default, about 1 GB), text and JSON Lines, warm in the
  page cache: lines per second, median of ``--rounds`` runs of the command.
* ``table``: a throwaway PostgreSQL with ``--rows`` rows (10 million by
  default) made as the store makes them; the two questions of issue 17, their
  query times (median of ``--rounds``, after one warm-up) and plans.
* ``purge``: ``/login/``'s latency under a steady open-loop load with the
  PostgreSQL store, without and then with ``purge`` of ``--rows`` old rows
  running beside it: p50, p99, and the ratio of the p99s.

Figures and what they mean: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from quart_app.records import FORMATTERS, LoginRecord

LOG_COMMAND = str(Path(sys.executable).with_name("quart-app-log"))
WANTED = "张三"
"""The user searched for: one login in every :data:`EVERY` is theirs."""
EVERY = 100_000
SPAN = timedelta(days=90)
"""The trail's records spread over this long, up to now."""


def _addresses(rng: random.Random, count: int) -> list[str]:
    # 1,000 /24 networks of 100 hosts each, a tenth of them IPv6.
    networks = [f"10.{n // 256}.{n % 256}." for n in range(900)]
    addresses = [net + str(host) for net in networks for host in range(1, 101)]
    addresses += [f"2001:db8:{n:x}::{host:x}" for n in range(100) for host in range(1, 101)]
    return [addresses[rng.randrange(len(addresses))] for _ in range(count)]


def records(count: int, seed: int = 1, *, first: int = 0, total: int = 0) -> list[LoginRecord]:
    """Logins ``first`` to ``first + count`` of ``total`` (default ``count``), oldest first
    over :data:`SPAN` up to now, of 100,000 users and :data:`WANTED`."""
    rng = random.Random(seed)
    total = total or count
    step = SPAN / total
    start = datetime.now(UTC) - SPAN
    ips = _addresses(rng, count)
    return [
        LoginRecord(
            WANTED if n % EVERY == EVERY // 2 else f"user-{rng.randrange(100_000)}",
            start + step * n,
            ips[n - first],
        )
        for n in range(first, first + count)
    ]


def _median_seconds(command: list[str], rounds: int) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(rounds):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=False, timeout=3600)
        times.append(time.perf_counter() - started)
        out = done.stdout.decode()
    return statistics.median(times), out


def bench_files(lines: int, rounds: int, workdir: Path) -> None:
    """Print lines per second of ``search --user`` over a text and a JSON Lines log."""
    made = records(lines)
    for form, formatter in FORMATTERS.items():
        log = workdir / f"login_log.{form}"
        with log.open("wb") as file:
            for start in range(0, lines, 100_000):
                file.write(formatter(made[start : start + 100_000]))
        size = log.stat().st_size
        command = [LOG_COMMAND, "search", str(log), "--user", WANTED]
        seconds, out = _median_seconds(command, rounds)
        found = out.count("\n")
        print(
            f"{form}: {lines:,} lines, {size / 1e9:.2f} GB: search --user found {found:,} in "
            f"{seconds:.2f} s (median of {rounds}): {lines / seconds / 1e6:.2f} M lines/s"
        )
        log.unlink()


async def _fill(url: str, rows: int) -> None:
    import asyncpg

    from quart_app.stores.pg_table import ensure_table, quoted

    connection = await asyncpg.connect(url)
    try:
        await ensure_table(connection, "login_log")
        name = quoted("login_log")
        batch = 200_000
        for start in range(0, rows, batch):
            made = records(min(batch, rows - start), seed=start, first=start, total=rows)
            await connection.copy_records_to_table(
                "login_log",
                records=[(uuid.uuid4(), r.username, r.time, r.ip, "web-1") for r in made],
                columns=["id", "username", "logged_in_at", "ip", "host"],
            )
        await connection.execute(f"VACUUM ANALYZE {name}")
    finally:
        await connection.close()


QUESTIONS = {
    "search --user 张三 -n 20": ["--user", WANTED, "-n", "20"],
    "search --ip 10.3.7.0/24 --since 7d -n 100": [
        "--ip",
        "10.3.7.0/24",
        "--since",
        "7d",
        "-n",
        "100",
    ],
}


async def _query_times(url: str, rounds: int) -> None:
    from quart_app.tools.log.cli import parser
    from quart_app.trail import Query
    from quart_app.trail import table as tables

    connection = await tables.connect(url)
    try:
        for question, argv in QUESTIONS.items():
            args = parser().parse_args(["search", url, *argv])
            query = Query(user=args.user, network=args.ip, since=args.since, until=args.until)
            sql, values = tables.search_sql("login_log", query, last=args.n, newest_first=False)
            await connection.fetch(sql, *values)  # warm-up: plan and pages
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                found = await connection.fetch(sql, *values)
                times.append(time.perf_counter() - started)
            plan = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *values)
            print(
                f"{question}: {len(found)} rows in {statistics.median(times) * 1000:.2f} ms "
                f"(median of {rounds})"
            )
            print("\n".join("    " + row[0] for row in plan))
    finally:
        connection.terminate()


def bench_table(rows: int, rounds: int, workdir: Path) -> None:
    """Fill a throwaway PostgreSQL and print the two questions' times and plans."""
    from quart_app.tools.throwaway_postgres import throwaway_postgres

    with throwaway_postgres(workdir / "pg") as server:
        started = time.perf_counter()
        asyncio.run(_fill(server.url, rows))
        print(f"{rows:,} rows made in {time.perf_counter() - started:.0f} s")
        asyncio.run(_query_times(server.url, rounds))
        for question, argv in QUESTIONS.items():
            seconds, _ = _median_seconds([LOG_COMMAND, "search", server.url, *argv], rounds)
            print(f"{question}: the whole command {seconds * 1000:.0f} ms, Python's start included")


def main(argv: list[str] | None = None) -> int:
    """Run one of the trail's benchmarks."""
    parser = argparse.ArgumentParser(prog="python -m bench.trail", description=__doc__)
    parser.add_argument("what", choices=("files", "table", "purge"))
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--rows", type=int, default=None, help="table: 10M; purge: 1M")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quart-trail-") as tmp:
        if args.what == "files":
            bench_files(args.lines, args.rounds, Path(tmp))
        elif args.what == "table":
            bench_table(args.rows or 10_000_000, args.rounds, Path(tmp))
        else:
            from .purge import bench_purge

            bench_purge(args.rows or 1_000_000, args.rounds, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
