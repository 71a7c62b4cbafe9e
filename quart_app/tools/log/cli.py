"""``quart-app-log``: the command line, its exit statuses, and what each subcommand runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from quart_app.config import ConfigError, table_name
from quart_app.trail import Bad, Found, Query, Tail, parse_network
from quart_app.trail.files import is_gzip

from .keygen import keygen
from .output import FORMATS, Printer
from .sources import Sources, UsageError
from .stats import BUCKETS, Stats
from .verify import run_verify
from .when import parse_when

MATCHED, NOTHING, USAGE = 0, 1, 2

EXIT_STATUS = """\
exit status (every subcommand):
  0  something matched (purge: rows deleted, or would be with --dry-run;
     keygen: the key was made; verify: everything verified)
  1  nothing matched (verify: something did not verify)
  2  a usage error, or a source that cannot be read at all (a missing file, an
     unreachable database); bad records inside a readable source do not change it

Times (T) are ISO 8601 dates or date-times, UTC unless an offset is given
(2026-12-01, 2026-12-01T08:30+08:00), or a span back from now (90m, 24h, 7d).
"""

FOLLOW_POLL = 0.2
"""Seconds between two reads of a followed file."""


def printable(text: str) -> str:
    """``text`` with what a terminal would act on (escapes, line breaks, bidi controls)
    shown as Python escapes: a file's name is anyone's choice."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class Reported:
    """Counts what was bad and says where on stderr, as it comes; sums it up at the end."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.bad = 0
        self.unreadable_source = False
        self.matched = False  # what the exit status says, also after Ctrl-C

    def __call__(self, bad: Bad) -> None:
        if bad.whole_source:
            self.unreadable_source = True
        else:
            self.bad += 1
        self.err.write(f"quart-app-log: {printable(bad.place)}: {printable(bad.reason)}\n")
        self.err.flush()

    def summary(self) -> None:
        """The closing summary: how many lines (or files, followed) could not be read."""
        if self.bad:
            self.err.write(
                f"quart-app-log: {self.bad:,} problems reported above; the rest was read\n"
            )

    def status(self) -> int:
        """The exit status: what matched, or whether a source could not be read at all."""
        if self.unreadable_source:
            return USAGE
        return MATCHED if self.matched else NOTHING


def _when(text: str) -> datetime:
    try:
        return parse_when(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _network(text: str) -> Any:
    try:
        return parse_network(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an address or a CIDR network: {text!r} "
            "(203.0.113.7, 203.0.113.0/24, 2001:db8::/32)"
        ) from None


MOST_RECORDS = 10**9
"""The largest ``-n``: PostgreSQL's LIMIT takes a 64-bit number, and no trail holds more."""


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MOST_RECORDS:
        raise argparse.ArgumentTypeError(
            f"not a number of records from 1 to {MOST_RECORDS:,}: {text!r}"
        )
    return int(text)


def _table(text: str) -> str:
    try:
        return table_name("--table", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _png(text: str) -> Path:
    if not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"the chart is a PNG file: name it *.png, not {text!r}")
    return Path(text)


def _window(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=_when, metavar="T", help="from T on (inclusive)")
    parser.add_argument("--until", type=_when, metavar="T", help="before T (exclusive)")


def parser() -> argparse.ArgumentParser:
    """The command line of ``quart-app-log``."""
    main = argparse.ArgumentParser(
        prog="quart-app-log",
        description="Read the login trail: log files (text or JSON Lines, rotated and .gz "
        "ones included, given in order) or a postgresql:// URL (the password may come from "
        "PGPASSWORD or a passfile).",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=EXIT_STATUS,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return sub

    search = command("search", "print the login records that match every filter given")
    search.add_argument("sources", nargs="+", metavar="SOURCE", help="log files, or a URL")
    search.add_argument("--user", metavar="NAME", help="exactly this username (--user=-x)")
    search.add_argument("--ip", type=_network, metavar="ADDRESS|NETWORK")
    _window(search)
    search.add_argument("-n", type=_count, metavar="N", help="only the last N matches")
    search.add_argument("-r", action="store_true", help="newest first")
    search.add_argument("--format", choices=FORMATS, default="text")
    search.add_argument(
        "--follow", action="store_true", help="then print new records as they come (files only)"
    )
    stats = command("stats", "logins per hour or day, distinct and top users and addresses")
    stats.add_argument("sources", nargs="+", metavar="SOURCE", help="log files, or a URL")
    stats.add_argument("--by", choices=BUCKETS, default="day")
    _window(stats)
    stats.add_argument("--plot", type=_png, metavar="FILE.png", help="draw logins over time")
    purge = command("purge", "delete the table's rows older than T, in small batches")
    # nargs="+", refused beyond one by Sources: argparse would echo the extra URL, password too.
    purge.add_argument("sources", nargs="+", metavar="URL", help="a postgresql:// URL")
    purge.add_argument("--before", type=_when, metavar="T", required=True)
    purge.add_argument("--dry-run", action="store_true", help="count them, delete nothing")
    purge.add_argument("--yes", action="store_true", help="do not ask")
    for sub in (search, stats, purge):
        sub.add_argument("--table", type=_table, default="login_log", help="(default login_log)")
    keys = command("keygen", "make a host's signing key for sealed logs, and print its public key")
    keys.add_argument("key", type=Path, metavar="KEY_PATH", help="the key (KEY_PATH.pub: public)")
    keys.add_argument("--name", help="the key's name (default HOSTNAME/login-log)")
    check = command(
        "verify",
        "check a sealed log or table: every line or row as sealed, nothing cut or added",
    )
    check.add_argument(
        "logs",
        nargs="+",
        metavar="LOG|URL",
        help="the log's files, oldest first (.gz too), or a sealed table's postgresql:// URL",
    )
    check.add_argument(
        "--key",
        action="append",
        required=True,
        metavar="PUBLIC",
        help="the host's first public key: the line keygen printed, or its .pub file "
        "(a table: each host's)",
    )
    check.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="FILE",
        help="checkpoints held elsewhere (login-log-checkpoint lines, or a note)",
    )
    check.add_argument(
        "--start",
        type=_count,
        metavar="LINE",
        help="start at the file that begins after this line of the tree (older files "
        "removed on purpose); its checkpoint is trusted",
    )
    check.add_argument("--seal", metavar="FILE", help="the seal file (default: LOG.seal)")
    check.add_argument("--table", type=_table, default="login_log", help="(default login_log)")
    return main


async def _search(args: argparse.Namespace, sources: Sources, out: TextIO, report: Reported) -> int:
    query = Query(user=args.user, network=args.ip, since=args.since, until=args.until)
    printer = Printer(out, args.format)
    files = sources.files[:-1] if args.follow else sources.files
    reading = Sources(files=files, url=sources.url, table=sources.table)
    tail = Tail(sources.files[-1], query) if args.follow else None
    kept: list[Found] = []
    async for item in reading.read(query, last=None if tail else args.n, newest_first=args.r):
        if isinstance(item, Bad):
            report(item)
        elif tail is None:
            report.matched = True
            printer.write(item)
        else:
            kept.append(item)
    if tail is None:
        out.flush()
        return report.status()
    failing = None  # said once, not at every read
    try:
        while True:
            try:
                items = tail.read()
            except OSError as exc:
                items, reason = [], f"cannot be read: {exc.strerror or exc}"
                if reason != failing:
                    report(Bad(tail.path, reason))
                failing = reason
            else:
                failing = None
            for item in items:
                if isinstance(item, Bad):
                    report(item)
                else:
                    kept.append(item)
            if kept:
                report.matched = True
                for found in kept[-args.n :] if args.n else kept:
                    printer.write(found)
                kept, args.n = [], None
                out.flush()
            await asyncio.sleep(FOLLOW_POLL)
    finally:  # until Ctrl-C or SIGTERM (KeyboardInterrupt, see main)
        tail.close()


async def _stats(args: argparse.Namespace, sources: Sources, out: TextIO, report: Reported) -> int:
    stats = Stats(args.by)
    async for item in sources.read(Query(since=args.since, until=args.until)):
        if isinstance(item, Bad):
            report(item)
        else:
            stats.add(item)
    if report.unreadable_source:
        return USAGE
    report.matched = stats.logins > 0
    stats.report(out)
    if args.plot is not None and not stats.logins:
        report(Bad(str(args.plot), "not drawn: no login to draw"))
    elif args.plot is not None:
        try:
            stats.plot(args.plot)
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'quart_app[plot]'") from None
        except OSError as exc:
            raise UsageError(f"cannot write {args.plot}: {exc.strerror or exc}") from None
        except (ValueError, OverflowError) as exc:  # a time matplotlib cannot place
            report(Bad(str(args.plot), f"not drawn: {exc}"))
    return report.status()


async def _purge(args: argparse.Namespace, sources: Sources, out: TextIO, report: Reported) -> int:
    from quart_app.seal import table_purge as sealed_purge
    from quart_app.trail import table as tables

    if sources.url is None:
        raise UsageError(
            "purge takes a postgresql:// URL; log files are purged by logrotate (docs/deploying.md)"
        )
    before = args.before.isoformat(sep=" ")
    try:
        connection = await tables.connect(sources.url)
    except tables.SourceError as exc:
        report(Bad("source", str(exc), whole_source=True))
        return USAGE
    try:
        if await sealed_purge.is_sealed(connection, sources.table):
            return await _purge_sealed(args, connection, sources.table, out)
        older = await tables.count_before(connection, sources.table, args.before)
        if args.dry_run or not older:
            verb = "would delete" if args.dry_run else "deleted"
            out.write(f"{verb} {older:,} rows older than {before} from {sources.table}\n")
            return MATCHED if older else NOTHING
        if not args.yes:
            _confirm(f"Delete {older:,} rows older than {before} from {sources.table}?")
        deleted = await tables.purge(connection, sources.table, args.before)
        out.write(f"deleted {deleted:,} rows older than {before} from {sources.table}\n")
        return MATCHED if deleted else NOTHING
    except UsageError:
        raise
    except Exception as exc:  # a missing table, no DELETE privilege, a lost connection
        reason = f"{type(exc).__name__}: {exc}"
        if getattr(exc, "sqlstate", None) == "42501":  # insufficient privilege
            reason += " (purge needs SELECT and DELETE on the table: docs/reading.md)"
        report(Bad(f"table {sources.table}", reason, whole_source=True))
        return USAGE
    finally:
        connection.terminate()


async def _purge_sealed(args: argparse.Namespace, connection: Any, table: str, out: TextIO) -> int:
    from quart_app.seal import table_purge as sealed_purge
    from quart_app.trail.table import PURGE_BATCH

    before = args.before.isoformat(sep=" ")
    cuts, loose = await sealed_purge.plan(connection, table, args.before)
    count = sum(cut.rows for cut in cuts) + loose
    for cut in cuts:
        out.write(f"stream {cut.stream}: cut at position {cut.position:,} ({cut.rows:,} rows)\n")
    if args.dry_run or not (cuts or loose):
        verb = "would delete" if args.dry_run else "deleted"
        out.write(
            f"{verb} {count:,} rows older than {before} from the sealed table {table}, each "
            "stream cut at its last checkpoint before then\n"
        )
        return MATCHED if count else NOTHING
    if not args.yes:
        _confirm(f"Delete {count:,} rows older than {before} from the sealed table {table}?")
    deleted = await sealed_purge.purge(connection, table, cuts, args.before, PURGE_BATCH)
    out.write(
        f"deleted {deleted:,} rows older than {before} from the sealed table {table}, each "
        "stream cut at its last checkpoint before then (verify starts there)\n"
    )
    return MATCHED if deleted else NOTHING


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask whether to delete: add --yes to purge without asking")
    answer = input(f"{question} [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise UsageError("nothing deleted")


COMMANDS: dict[str, Callable[..., Any]] = {"search": _search, "stats": _stats, "purge": _purge}


def _check_plain(path: str) -> None:
    try:
        with open(path, "rb") as file:
            if is_gzip(file):
                raise UsageError(f"--follow follows the last file given, and {path} is compressed")
    except FileNotFoundError:
        pass  # followed until it appears
    except OSError as exc:
        raise UsageError(f"{path} cannot be read: {exc.strerror or exc}") from None


def _interrupted(signum: int, frame: object) -> None:
    # Not asyncio's own Ctrl-C handling, which waits for the next await: reading a
    # file is synchronous, and a FIFO with no writer blocks in open().
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run ``quart-app-log``; return its exit status (see :data:`EXIT_STATUS`)."""
    args = parser().parse_args(argv)
    # UTF-8 whatever the locale; an undecodable file name comes back as its bytes.
    out = sys.stdout
    if isinstance(out, io.TextIOWrapper):
        out.reconfigure(encoding="utf-8", errors="surrogateescape")
    report = Reported(sys.stderr)
    try:
        if args.command == "keygen":
            keygen(args.key, args.name, out)
            return MATCHED
        if args.command == "verify":
            return run_verify(
                args.logs, args.key, args.checkpoint, args.start, args.seal, out, args.table
            )
        sources = Sources.of(args.sources, args.table)
        if getattr(args, "follow", False):
            if sources.url is not None:
                raise UsageError("--follow reads files only")
            if args.r:
                raise UsageError("--follow prints oldest first: it cannot be given with -r")
            _check_plain(sources.files[-1])
        signal.signal(signal.SIGINT, _interrupted)
        signal.signal(signal.SIGTERM, _interrupted)
        status = asyncio.run(COMMANDS[args.command](args, sources, out, report))
    except UsageError as exc:
        sys.stderr.write(f"quart-app-log {args.command}: {printable(str(exc))}\n")
        return USAGE
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what was found so far says the status
        with contextlib.suppress(OSError):
            out.flush()
        status = report.status()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        sys.stdout = None  # type: ignore[assignment]  # no flush error at exit
        return MATCHED
    report.summary()
    return status
