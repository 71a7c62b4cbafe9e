"""``python -m bench.trail purge``: ``/login/``'s latency with ``quart-app-log purge`` beside it.

A throwaway PostgreSQL holds ``rows`` logins older than 30 days; the project's
server (PostgreSQL store) takes a steady open-loop load of :data:`RATE`
logins per second for :data:`SECONDS`, once alone and once while ``purge
--before 30d`` deletes the old rows, in alternating rounds (the old rows are
put back before each pair). Printed: p50 and p99 of each round, the medians, and
the ratio of the p99s.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from quart_app.tools.server import run_server
from quart_app.tools.throwaway_postgres import throwaway_postgres

from .trail import LOG_COMMAND, records

RATE = 300
"""Logins per second: steady, well below what this machine serves, so latency is not queueing."""
SECONDS = 15
LOAD_COMMAND = str(Path(sys.executable).with_name("quart-app-loadtest"))


async def _put_back(url: str, rows: int) -> None:
    import asyncpg

    from quart_app.stores.pg_table import ensure_table

    connection = await asyncpg.connect(url)
    try:
        await ensure_table(connection, "login_log")
        old = datetime.now(UTC) - timedelta(days=400)
        for start in range(0, rows, 200_000):
            made = records(min(200_000, rows - start), seed=start)
            await connection.copy_records_to_table(
                "login_log",
                records=[
                    (uuid.uuid4(), r.username, old + (r.time - made[0].time), r.ip, "old")
                    for r in made
                ],
                columns=["id", "username", "logged_in_at", "ip", "host"],
            )
        await connection.execute("VACUUM ANALYZE login_log")
    finally:
        await connection.close()


def _load(url: str, run: str) -> dict[str, float]:
    command = [
        LOAD_COMMAND, url, "--rate", str(RATE), "-d", str(SECONDS), "-c", "200",
        "--run-id", run, "--json", "-q",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, check=True, timeout=SECONDS + 120)
    return json.loads(done.stdout)["latency_ms"]


def bench_purge(rows: int, rounds: int, workdir: Path) -> None:
    """Print ``/login/``'s p50 and p99 without and with a purge of ``rows`` rows beside it."""
    with throwaway_postgres(workdir / "pg") as database:
        env = {"QUART_LOGIN_LOG_DATABASE_URL": database.url}
        results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        with run_server(workdir, env) as server:
            for number in range(rounds):
                asyncio.run(_put_back(database.url, rows))  # the same table for both rounds
                for purging in (False, True):
                    purge = None
                    if purging:
                        purge = subprocess.Popen(
                            [LOG_COMMAND, "purge", database.url, "--before", "30d", "--yes"],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                        )
                    started = time.monotonic()
                    latency = _load(server.url, f"p{number}{int(purging)}")
                    if purge is not None:
                        out, err = purge.communicate(timeout=3600)
                        took = time.monotonic() - started
                        print(f"  purge: {out.decode().strip()} in {took:.0f} s {err.decode()}")
                    results[purging].append(latency)
                    print(
                        f"round {number + 1} {'with' if purging else 'without'} purge: "
                        f"p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms"
                    )
        p99 = {k: statistics.median(r["p99"] for r in v) for k, v in results.items()}
        p50 = {k: statistics.median(r["p50"] for r in v) for k, v in results.items()}
        print(
            f"median of {rounds}: without purge p50 {p50[False]:.2f} ms p99 {p99[False]:.2f} ms; "
            f"with purge p50 {p50[True]:.2f} ms p99 {p99[True]:.2f} ms; "
            f"p99 ratio {p99[True] / p99[False]:.2f}"
        )
