"""``python -m bench.spool``: how fast a backlog in the spool reaches the table (issue 19).

A throwaway PostgreSQL is started, its table created, and the database
stopped. The app's own store (``LOGIN_LOG_DATABASE_URL`` with
``LOGIN_LOG_SPOOL_DIR``, built from the settings as the server builds it)
then takes ``--records`` logins in batches of 2,048 with the database away:
every batch goes to the spool, as during an outage. The store is closed (a
stop during the outage) and the database started again. Then hypercorn
serves the app as ``make run`` does, with the same settings: at its start it
adopts the spool files left and forwards them into the table, while the
load-test tool sends new logins at ``--rate`` per second (open loop) for
``--load-seconds``. Measured: the time from the server's start until its
``/healthz`` counts every spooled record forwarded (records per second), the
server's and the database's CPU meanwhile, and the new logins' statuses and
latency during the forwarding and after it. Checked by the project's
verifier (:func:`~quart_app.tools.loadtest.verify_log`): every spooled record
is in the table exactly once, and so is every login acknowledged meanwhile.

A file adopted from a stopped process is forwarded with its records checked
for being stored already (an INSERT rolled back first, for each batch of
2,048): a process that spooled them itself, still running, skips that check.
``--same-process`` measures that case instead: the store that spooled the
backlog forwards it itself once the database is back, in this process,
without a server or a load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from quart_app.config import Settings, from_environment
from quart_app.records import LoginRecord
from quart_app.spool import SpoolStore
from quart_app.stores.pg_table import ensure_table
from quart_app.stores.registry import store_from_settings
from quart_app.tools.loadtest import LoadConfig, Logins, Summary, run_load, run_uvloop, verify_log
from quart_app.tools.loadtest.sources import PostgresTable
from quart_app.tools.server import run_server
from quart_app.tools.throwaway_postgres import Postgres, throwaway_postgres

TABLE = "login_log"
HOST = "bench-spool"
BATCH = 2048
"""Records per write while the database is away: the writer's largest batch."""
POLL = 0.2
"""Seconds between looks at the server's ``/healthz``."""


def settings_env(database_url: str, spool: Path) -> dict[str, str]:
    """The ``QUART_*`` settings of the store that spools and of the server that forwards."""
    return {
        "QUART_LOGIN_LOG_DATABASE_URL": database_url,
        "QUART_LOGIN_LOG_TABLE": TABLE,
        "QUART_LOGIN_LOG_HOST": HOST,
        "QUART_LOGIN_LOG_SPOOL_DIR": str(spool),
    }


def backlog_store(env: dict[str, str]) -> SpoolStore:
    """The app's store for ``env``, as the server builds it: the table inside a spool."""
    store = store_from_settings(Settings.from_config(from_environment(env)))
    assert isinstance(store, SpoolStore), type(store)
    return store


def backlog_records(prefix: str, start: int, stop: int) -> list[LoginRecord]:
    """Logins ``prefix + n`` for n in ``[start, stop)``: a microsecond apart, an IP each but
    every eighth (``-``)."""
    base = datetime.now(UTC) - timedelta(hours=1)
    return [
        LoginRecord(
            f"{prefix}{n}",
            base + timedelta(microseconds=n),
            "-" if n % 8 == 7 else f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",
        )
        for n in range(start, stop)
    ]


async def spool_backlog(store: SpoolStore, prefix: str, records: int) -> float:
    """Write ``records`` logins through ``store`` (open, the database away); the seconds taken."""
    started = time.perf_counter()
    for start in range(0, records, BATCH):
        batch = backlog_records(prefix, start, min(records, start + BATCH))
        set_aside = await store.write(store.prepare(batch))
        if set_aside or not store.spooling:
            raise RuntimeError("the store wrote to the table: the database was not away")
    await store.sync()
    return time.perf_counter() - started


async def build_backlog(env: dict[str, str], prefix: str, records: int) -> float:
    """The backlog left as a stop during an outage leaves it: the store closed, its files
    unlocked for the next start to adopt. The seconds spooling took."""
    store = backlog_store(env)
    await store.open()  # the database is down: spooling from the start
    try:
        return await spool_backlog(store, prefix, records)
    finally:
        await store.close()


def spool_files(spool: Path) -> tuple[int, int]:
    """The spool files in ``spool``: how many, and their bytes."""
    sizes = [p.stat().st_size for p in spool.iterdir() if p.name.endswith(".seg")]
    return len(sizes), sum(sizes)


def database_cpu(database: Postgres) -> float:
    """CPU seconds the database's processes have used so far."""
    assert database.pid is not None
    total = 0.0
    root = psutil.Process(database.pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


async def create_table(url: str) -> None:
    """The table, as the server would create it (so the server's start only checks it)."""
    connection = await asyncpg.connect(url)
    try:
        await ensure_table(connection, TABLE)
    finally:
        await connection.close()


async def check_backlog(url: str, prefix: str, records: int) -> tuple[bool, str]:
    """Every spooled record in the table exactly once, by the project's verifier, and the
    distinct ids; ``(ok, line)``."""
    names = [f"{prefix}{n}" for n in range(records)]
    result = await verify_log(
        PostgresTable(url, TABLE, prefix=prefix),
        Logins.sent_once(names, run_prefix=prefix),
        settle=0,  # every record forwarded, the server stopped: nothing can come later
    )
    connection = await asyncpg.connect(url)
    try:
        rows, ids = await connection.fetchrow(
            f"SELECT count(*), count(DISTINCT id) FROM {TABLE} WHERE starts_with(username, $1)",
            prefix,
        )
    finally:
        await connection.close()
    ok = result.ok and rows == ids == records
    line = (
        f"backlog in the table: {rows:,} rows, {ids:,} distinct ids; verifier: "
        f"{result.logged_once:,} of {records:,} logged once, {result.missing:,} missing, "
        f"{result.doubled:,} doubled: {'OK' if ok else 'FAILED'}"
    )
    return ok, line


@dataclass
class Forwarding:
    """What the polls of ``/healthz`` saw: ``(seconds since the server's start, forwarded)``."""

    started: float
    points: list[tuple[float, int]] = field(default_factory=list)
    done: float | None = None  # seconds since the start when every record was forwarded
    serving: float = 0.0  # seconds from the start until the server listened
    last: dict[str, Any] = field(default_factory=dict)  # the last /healthz "spool"


def _healthz_spool(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/healthz", timeout=10) as response:
        spool: dict[str, Any] = json.load(response)["spool"]
    return spool


async def watch(
    url: str,
    forwarding: Forwarding,
    records: int,
    say: Callable[[str], None],
) -> None:
    """Poll ``/healthz`` until the server counts ``records`` forwarded."""
    shown = 0.0
    while True:
        spool = await asyncio.to_thread(_healthz_spool, url)
        now = time.monotonic() - forwarding.started
        forwarding.points.append((now, spool["forwarded"]))
        forwarding.last = spool
        if spool["forwarded"] >= records:
            forwarding.done = now
            return
        if now - shown >= 5:
            shown = now
            say(f"  {now:5.1f} s: {spool['forwarded']:>10,} forwarded")
        await asyncio.sleep(POLL)


def split_seconds(summary: Summary, at: float | None) -> dict[str, dict[str, float]]:
    """The load's one-second buckets before and after ``at`` (seconds since the load's start):
    responses, failures, and the buckets' p99 (median and worst) and max latency."""
    parts: dict[str, list[Any]] = {"during": [], "after": []}
    for bucket in summary.seconds:
        ended = bucket.start_s + bucket.span_s
        parts["during" if at is None or ended <= at + 0.5 else "after"].append(bucket)
    out = {}
    for name, buckets in parts.items():
        if not buckets:
            continue
        p99s = [b.latency_ms["p99"] for b in buckets if b.latency_ms]
        out[name] = {
            "seconds": len(buckets),
            "responses": sum(b.responses for b in buckets),
            "failures": sum(b.failures for b in buckets),
            "p99_median_ms": statistics.median(p99s) if p99s else float("nan"),
            "p99_worst_ms": max(p99s, default=float("nan")),
            "max_ms": max((b.latency_ms["max"] for b in buckets if b.latency_ms), default=0.0),
        }
    return out


async def serve_and_forward(
    args: argparse.Namespace,
    workdir: Path,
    database: Postgres,
    env: dict[str, str],
    say: Callable[[str], None],
) -> bool:
    """Start the server with the database up; time the forwarding under the load; check."""
    ok = True
    load_summary: Summary | None = None
    database_before = database_cpu(database)
    forwarding = Forwarding(time.monotonic())
    with run_server(workdir, env, startup_timeout=120) as server:
        forwarding.serving = time.monotonic() - forwarding.started
        load_started = time.monotonic()
        load_task = None
        if args.rate > 0:
            config = LoadConfig(
                server.url,
                duration=args.load_seconds,
                rate=args.rate,
                concurrency=200,
                prefix="lt-",
            )
            load_task = asyncio.create_task(run_load(config))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.timeout):
                await watch(server.url, forwarding, args.records, say)
        server_cpu = server.cpu_seconds()
        database_used = database_cpu(database) - database_before
        if load_task is not None:
            load_summary = await load_task
        spool = await asyncio.to_thread(_healthz_spool, server.url)
        status = await asyncio.to_thread(server.stop)
    if forwarding.done is None:
        say(
            f"NOT DONE: {forwarding.last.get('forwarded', 0):,} of {args.records:,} forwarded "
            f"after {args.timeout:g} s"
        )
        ok = False
    else:
        rate = args.records / forwarding.done
        say(
            f"forwarded {args.records:,} records in {forwarding.done:.1f} s from the server's "
            f"start ({forwarding.serving:.1f} s of it before it listened): {rate:,.0f} records/s"
        )
        # The first poll that saw records forwarded: the rate from there on leaves out the
        # start and the adoption of the files (read whole before the first is forwarded).
        first, count = next((t, n) for t, n in forwarding.points if n)
        if forwarding.done > first:
            after = (args.records - count) / (forwarding.done - first)
            say(
                f"the first records were seen forwarded {first:.1f} s after the start; "
                f"from then on {after:,.0f} records/s"
            )
        say(
            f"CPU meanwhile: server {server_cpu:.1f} s "
            f"({1e6 * server_cpu / args.records:.1f} µs per record, the new logins' too), "
            f"database {database_used:.1f} s ({1e6 * database_used / args.records:.1f} µs)"
        )
    files, size = spool_files(Path(env["QUART_LOGIN_LOG_SPOOL_DIR"]))
    say(
        f"spool after: {files} files ({size:,} bytes) left; rejected {spool['rejected']}, "
        f"torn {spool['torn']}, moved aside {spool['moved_aside']}; server exit status {status}"
    )
    ok = ok and files == 0 and status == 0
    ok = ok and not (spool["rejected"] or spool["torn"] or spool["moved_aside"])
    if load_summary is not None:
        at = None
        if forwarding.done is not None:
            at = forwarding.done - (load_started - forwarding.started)
        ok = await report_load(database, load_summary, at, say) and ok
    backlog_ok, line = await check_backlog(database.url, args.prefix, args.records)
    say(line)
    return ok and backlog_ok


async def report_load(
    database: Postgres, summary: Summary, at: float | None, say: Callable[[str], None]
) -> bool:
    """The new logins: statuses, latency during the forwarding and after it, and the verifier."""
    statuses = ", ".join(f"{code}: {n:,}" for code, n in sorted(summary.statuses.items()))
    say(
        f"new logins: {summary.requests:,} sent at {summary.config.rate:g}/s, statuses "
        f"{statuses or 'none'}, errors {summary.error_count}"
        + ("" if summary.valid else f" (INVALID: {summary.invalid_reason})")
    )
    latency = summary.latency_ms()
    say(
        "  latency over the whole load (from the due time): "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in latency.items())
    )
    for name, part in split_seconds(summary, at).items():
        say(
            f"  {name} the forwarding ({part['seconds']:.0f} s): {part['responses']:,.0f} "
            f"answered, {part['failures']:.0f} failed; p99 per second median "
            f"{part['p99_median_ms']:.1f} ms, worst {part['p99_worst_ms']:.1f} ms; "
            f"max {part['max_ms']:.1f} ms"
        )
    result = await verify_log(
        PostgresTable(database.url, TABLE, prefix=summary.stem or ""), summary.logins(), settle=0
    )
    say(
        f"  new logins in the table: {result.logged_once:,} of {result.acknowledged:,} "
        f"acknowledged logged once, {result.missing} missing, {result.doubled} doubled: "
        + ("OK" if result.ok else "FAILED")
    )
    failed = summary.error_count or any(code != 200 for code in summary.statuses)
    return result.ok and not failed


async def forward_in_process(
    args: argparse.Namespace, database: Postgres, env: dict[str, str], say: Callable[[str], None]
) -> bool:
    """``--same-process``: the store that spooled the backlog forwards it, its files its own."""
    store = backlog_store(env)
    await store.open()
    try:
        took = await spool_backlog(store, args.prefix, args.records)
        say(f"spooled {args.records:,} records in {took:.1f} s (the database away)")
        await asyncio.to_thread(database.start)
        started = time.monotonic()
        database_before, own_before = database_cpu(database), _own_cpu()
        first = None
        deadline = started + args.timeout
        # Done once the writer is handed back to the table: the forwarder has
        # removed the last file by then (a stop while it removes one closes the
        # file twice: see bench/README.md).
        while (store.forwarded < args.records or store.spooling) and time.monotonic() < deadline:
            if first is None and store.forwarded:
                first = time.monotonic() - started
            await asyncio.sleep(0.01)
        done = time.monotonic() - started
        database_used, own_used = database_cpu(database) - database_before, _own_cpu() - own_before
    finally:
        await store.close()
    if store.forwarded < args.records:
        say(f"NOT DONE: {store.forwarded:,} of {args.records:,} forwarded after {done:.0f} s")
        return False
    say(
        f"forwarded {args.records:,} records in {done:.1f} s from the database's start "
        f"({args.records / done:,.0f} records/s); the first batch after {first or 0:.1f} s "
        "(the forwarder's retry wait, at most 2 s)"
    )
    say(
        f"CPU meanwhile: this process {own_used:.1f} s ({1e6 * own_used / args.records:.1f} µs "
        f"per record), database {database_used:.1f} s "
        f"({1e6 * database_used / args.records:.1f} µs)"
    )
    ok, line = await check_backlog(database.url, args.prefix, args.records)
    say(line)
    return ok


async def run(args: argparse.Namespace, say: Callable[[str], None]) -> bool:
    """The whole benchmark; whether every check passed."""
    logging.getLogger("quart_app").setLevel(logging.ERROR)  # the outage's warnings: expected
    with tempfile.TemporaryDirectory(prefix="quart-bench-spool-") as tmp:
        workdir = Path(tmp)
        spool = workdir / "spool"
        spool.mkdir(mode=0o700)
        with throwaway_postgres(workdir / "postgres") as database:
            env = settings_env(database.url, spool)
            await create_table(database.url)
            await asyncio.to_thread(database.stop)
            say(f"database stopped; spooling {args.records:,} records (batches of {BATCH:,})")
            if args.same_process:
                return await forward_in_process(args, database, env, say)
            took = await build_backlog(env, args.prefix, args.records)
            files, size = spool_files(spool)
            say(f"spooled {args.records:,} records in {took:.1f} s: {files} files, {size:,} bytes")
            await asyncio.to_thread(database.start)
            load = f"{args.rate:g} logins/s for {args.load_seconds:g} s" if args.rate else "none"
            say(f"database started; the server starts and forwards; new logins: {load}")
            return await serve_and_forward(args, workdir, database, env, say)


def main(argv: list[str] | None = None) -> int:
    """Build a backlog, forward it, print the figures; exit status 1 if a check failed."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.spool",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="backlog (default 1M)")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="new logins per second meanwhile (0: none)"
    )
    parser.add_argument(
        "--load-seconds", type=float, default=60.0, help="how long the new logins come (60)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the forwarding (600)"
    )
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="the spooling store forwards its own files, in this process (no server, no load)",
    )
    args = parser.parse_args(argv)
    if args.records < 1 or args.rate < 0 or args.load_seconds <= 0 or args.timeout <= 0:
        parser.error("--records must be at least 1, --rate at least 0, the seconds above 0")
    args.prefix = f"spool-{secrets.token_hex(3)}-"

    def say(text: str) -> None:
        print(text, flush=True)

    say(f"{os.cpu_count()} cores; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    return 0 if run_uvloop(run(args, say)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
