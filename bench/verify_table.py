"""``python -m bench.verify_table``: how fast ``verify`` checks a sealed table (issue 20).

A throwaway PostgreSQL is started; ``--rows`` logins (default 1,000,000) are
written into a sealed table by the app's own stores (two streams, as ``-w 2``
makes, a checkpoint after every batch of 2,048 like a busy second), then
``quart-app-log verify``'s check runs on it, ``--rounds`` times. Prints rows
per second (the median) and exits 1 if a run did not verify every row or
fell below ``--goal`` (200,000 rows/s).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from quart_app.records import LoginRecord
from quart_app.seal.note import Verifier
from quart_app.seal.table import SealedTableStore
from quart_app.seal.table_verify import verify_table
from quart_app.stores.postgres import PostgresStore
from quart_app.tools.log.keygen import keygen
from quart_app.tools.throwaway_postgres import throwaway_postgres

TABLE = "bench_sealed"
BATCH = 2048


async def fill(url: str, key: Path, rows: int) -> float:
    """``rows`` logins into the sealed table, by two streams; the seconds it took."""
    stores = []
    for _ in range(2):
        table = PostgresStore(url, table=TABLE, host="bench-host", timeout=30)
        sealed = SealedTableStore(table, table, str(key), interval=3600, stderr=io.StringIO())
        await sealed.open()
        stores.append(sealed)
    started = time.perf_counter()
    first = datetime(2026, 1, 1, tzinfo=UTC)
    for done in range(0, rows, BATCH):
        count = min(BATCH, rows - done)
        records = [
            LoginRecord(f"user-{(done + i) % 5000}", first + timedelta(seconds=done + i),
                        f"198.51.100.{(done + i) % 250}" if i % 3 else f"2001:db8::{i:x}")
            for i in range(count)
        ]  # fmt: skip
        store = stores[(done // BATCH) % 2]
        batch = store.prepare(records)
        assert not await store.write(batch)
        await store.checkpoint()  # one per batch
    for store in stores:
        await store.close()
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as workdir:
        key = Path(workdir) / "keys" / "key"
        key.parent.mkdir()
        keygen(key, "bench-host/login-log", io.StringIO())
        trusted = [Verifier.parse((key.parent / "key.pub").read_text())]
        with throwaway_postgres(Path(workdir) / "postgres") as database:
            took = await fill(database.url, key, args.rows)
            print(f"wrote {args.rows:,} sealed rows in {took:.1f} s", flush=True)
            connection = await asyncpg.connect(database.url)
            await connection.execute(f"VACUUM ANALYZE {TABLE}")
            speeds = []
            failed = False
            for round_ in range(args.rounds):
                started = time.perf_counter()
                report = await verify_table(connection, TABLE, trusted)
                seconds = time.perf_counter() - started
                sealed = sum(stream.sealed for stream in report.streams)
                ok = report.ok and report.rows == args.rows == sealed
                failed |= not ok
                speeds.append(report.rows / seconds)
                print(
                    f"round {round_ + 1}: {report.rows:,} rows in {seconds:.2f} s: "
                    f"{report.rows / seconds:,.0f} rows/s{'' if ok else ' NOT VERIFIED'}",
                    flush=True,
                )
            await connection.close()
    median = statistics.median(speeds)
    verdict = "met" if median >= args.goal else "NOT met"
    print(f"verify: median {median:,.0f} rows/s (goal {args.goal:,.0f}: {verdict})")
    return 1 if failed or median < args.goal else 0


def main(argv: list[str] | None = None) -> int:
    """Fill a sealed table, time verify, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.verify_table", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--goal", type=float, default=200_000)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
