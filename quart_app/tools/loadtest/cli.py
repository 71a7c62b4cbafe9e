"""The ``quart-app-loadtest`` command."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from quart_app.config import ConfigError, Settings, table_name
from quart_app.trail.where import is_database_url, url_scheme

from .config import (
    LOGIN_PATH,
    MAX_CONCURRENCY,
    MAX_DURATION_S,
    MAX_RATE,
    MAX_TIMEOUT_S,
    MIN_RATE,
    LoadConfig,
    check_path,
)
from .loop import LAG_LIMIT_MS, LAG_MAX_LIMIT_MS, TICK_S, run_uvloop
from .plot import BadPlotPath, PlotUnavailable, check_plot_path, plot_summary
from .report import summary_dict, summary_text
from .runner import ProgressCallback, run_load
from .schedule import LATE_TOLERANCE_NS
from .sources import LogMissing, open_source
from .verify import SETTLE_S, first_logged, verify_log

DEFAULT_REQUESTS = 1000
USERNAME_MAX_LENGTH: int = next(
    f.default for f in fields(Settings) if f.name == "username_max_length"
)
"""The server's default: a longer username is answered 400, never logged."""
DURATION_DIGITS = 12
"""The digits of n assumed for a run of -d, whose count is not known ahead."""


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _concurrency(text: str) -> int:
    value = _count(text)
    if value > MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_CONCURRENCY:,}, not {value}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def _positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text!r}")
    return value


def _number(value: float) -> str:
    return f"{int(value):,}" if value == int(value) else f"{value:g}"


def _bounded(at_most: float, what: str = "", at_least: float = 0) -> Callable[[str], float]:
    # Above the bound a float overflows where it becomes an integer (nanoseconds).
    said = f" ({what})" if what else ""

    def check(text: str) -> float:
        value = _positive(text)
        if value > at_most:
            raise argparse.ArgumentTypeError(
                f"must be at most {_number(at_most)}{said}, not {text!r}"
            )
        if value < at_least:
            raise argparse.ArgumentTypeError(f"must be at least {_number(at_least)}, not {text!r}")
        return value

    return check


def _non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {text!r}")
    return value


def _path(text: str) -> str:
    try:
        check_path(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _non_empty(needs: str) -> Callable[[str], str]:
    # An empty value is falsy: tested as "given?" it would silently skip the option.
    def check(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"needs {needs}, not ''")
        return text

    return check


def _log(text: str) -> str:
    text = _non_empty("a log file or a postgresql:// URL")(text)
    scheme = url_scheme(text)
    if scheme is not None and not is_database_url(text):
        # Read as a file's path it would be found missing only after the run, and
        # named in full then. The scheme alone: the rest may hold a password.
        raise argparse.ArgumentTypeError(
            f"needs a log file or a postgresql:// URL, not a {scheme}:// URL "
            "(not shown, as it may hold a password)"
        )
    return text


EPILOG = f"""\
closed and open loop:
  Without --rate, each of -c workers sends its next request when the last one
  is answered (closed loop, as wrk): while the server stalls, the requests users
  would have sent meanwhile are never sent, and the percentiles look better than
  reality (coordinated omission). With --rate R, request k is due at t0 + k/R
  (--arrivals poisson: exponential gaps of mean 1/R) whatever the server does,
  and -c caps the requests in flight (open loop, as wrk2 or k6). A request that
  cannot start on time waits and keeps its due time: "latency" counts from the
  due time, "service" from the actual send. A request is late when it starts
  more than {LATE_TOLERANCE_NS / 1e6:g} ms after its due time: uvloop's timers have 1 ms
  resolution, so one sent on time starts within about 1 ms of it.
  The achieved rate: the target times the share of the requests due that were sent
  (due before -d was over, or all of -n); dropped and unsent ones lower it, and
  it never exceeds the target.
  --drop-late: a request that cannot start on time (no worker free, or the
  client itself late) is not sent but counted as dropped (k6's dropped
  iterations), and so are those still due when -d is over.

verify:
  After the run, --verify reads the log until every login answered 200 is in
  it (for at most --verify-timeout seconds), then --verify-settle seconds
  more, and counts what comes meanwhile too: a login the server logs a second
  time later (a retried write) fails the check if that line comes within
  that time. A log that shows writes later than the server makes them (a
  lagging replica of the table) needs a longer --verify-settle.

timeouts:
  Requests that time out (--timeout) are counted as errors, by type, not in
  the latency percentiles, which hold answers only (as wrk does; k6 keeps
  them in http_req_duration, and leaves them out of its expected_response:true
  figures). A server that stalls past --timeout shows in the errors.

invalid runs:
  A ticker measures the client's own event-loop lag every {TICK_S * 1000:g} ms. If its
  p99 exceeds {LAG_LIMIT_MS:g} ms, or its max exceeds {LAG_MAX_LIMIT_MS:g} ms (one stall of
  the client, sampled once however many requests it delayed), the client could
  not keep up and the figures measure it rather than the server: the summary
  says INVALID ("valid": false in --json). The exit status does not change.

usernames:
  PREFIX + RUN_ID + "-" + n, unique to the run. PREFIX and RUN_ID may only hold
  ASCII letters, digits and . _ ~ - (others the server would strip or escape).
  A username may be at most {USERNAME_MAX_LENGTH} characters (the server's default
  USERNAME_MAX_LENGTH), n counted with the digits of the largest for -n and
  {DURATION_DIGITS} for -d: the server answers longer ones 400, so they exit 2.
  With --verify, a RUN_ID already in the log is refused: it would read as doubled.
  Each request is sent once: aiohttp's silent resend of a GET whose connection
  dropped is refused and counted (resends_refused); redirects are not followed.

exit status:
  0 the run finished (and --verify passed); 1 --verify failed: nothing was
  acknowledged (no login answered 200), or an acknowledged login is missing,
  or one is logged more often than sent, or the run's stem is logged for a
  login it never sent, or a line the log gained during the run or its check
  is no login record (a torn or interleaved write), or after the run the log
  could not be read (tried again until --verify-timeout) or did not exist (no
  such file or table);
  or the --plot could not be drawn (the summary is shown all the same);
  2 bad arguments, and a log that cannot be read before the run (a
  directory, a wrong password, no server): nothing is sent; 130 interrupted;
  141 the output's reader went away (a closed pipe, as | head).
"""


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        prog="quart-app-loadtest",
        description="Load a quart_app server with logins and, with --verify, check that "
        "every acknowledged login was logged exactly once.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", metavar="URL", help="the server's base URL, http://HOST:PORT")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument(
        "-n",
        "--requests",
        type=_count,
        help=f"send this many requests (default {DEFAULT_REQUESTS})",
    )
    amount.add_argument(
        "-d",
        "--duration",
        type=_bounded(MAX_DURATION_S, "a week"),
        help="send requests for this many seconds (at most a week)",
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        type=_concurrency,
        default=10,
        help="workers (closed loop) or most requests in flight (open loop) "
        f"(default 10, at most {MAX_CONCURRENCY:,})",
    )
    parser.add_argument(
        "--rate",
        type=_bounded(MAX_RATE, at_least=MIN_RATE),
        metavar="R",
        help=f"open loop: R requests due per second ({MIN_RATE:g} to {MAX_RATE:,})",
    )
    parser.add_argument(
        "--arrivals",
        choices=("constant", "poisson"),
        default="constant",
        help="open loop: due every 1/R s, or Poisson arrivals of rate R (default constant)",
    )
    parser.add_argument(
        "--drop-late",
        action="store_true",
        help="open loop: do not send a request that cannot start on time; count it dropped",
    )
    parser.add_argument("--method", choices=("get", "post"), default="get", help="(default get)")
    parser.add_argument(
        "--path", type=_path, default=LOGIN_PATH, help=f"appended to URL (default {LOGIN_PATH})"
    )
    parser.add_argument(
        "--prefix",
        help="usernames are PREFIX + run id + '-' + n (default lt-), "
        f"at most {USERNAME_MAX_LENGTH} characters in all",
    )
    parser.add_argument(
        "--run-id",
        type=_non_empty("at least one character"),
        help="the run id in the usernames (default: random)",
    )
    parser.add_argument(
        "--no-usernames",
        action="store_true",
        help="send no username, e.g. to load / (no --verify then)",
    )
    parser.add_argument(
        "--timeout",
        type=_bounded(MAX_TIMEOUT_S, "an hour"),
        default=30.0,
        help="seconds per request, then counted as an error (default 30, at most an hour)",
    )
    parser.add_argument(
        "--verify",
        metavar="LOG",
        type=_log,
        help="after the run, check each login answered 200 is in LOG exactly once: a log "
        "file, or the postgresql:// (or postgres://, any case) URL of a role that may read "
        "the table",
    )
    parser.add_argument(
        "--verify-table",
        metavar="TABLE",
        help="with --verify postgresql://...: the table (default login_log)",
    )
    parser.add_argument(
        "--verify-timeout",
        type=_non_negative,
        default=10.0,
        help="seconds to wait for the writer to catch up (default 10)",
    )
    parser.add_argument(
        "--verify-settle",
        metavar="SECONDS",
        type=_non_negative,
        default=SETTLE_S,
        help="once every acknowledged login is logged, read on this long and count what "
        "comes meanwhile: a login the server logs again later fails --verify (default "
        f"{SETTLE_S:g}: the server's 50 ms batches and its longest wait, 2 s, before "
        "retrying a failed write; 0: off)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object, HDR histograms included",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        type=_non_empty("a file name"),
        help="draw latency and throughput over time",
    )
    return parser


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> LoadConfig:
    if args.verify and args.no_usernames:
        parser.error("--verify needs the usernames that --no-usernames turns off")
    poisson = args.arrivals == "poisson"  # constant is what a closed loop does anyway
    for option, given in (("--drop-late", args.drop_late), ("--arrivals", poisson)):
        if given and args.rate is None:  # named as typed, not as LoadConfig's field
            parser.error(f"{option} needs --rate (an open-loop run)")
    for option, value in (("--prefix", args.prefix), ("--run-id", args.run_id)):
        if value is not None and args.no_usernames:
            parser.error(f"{option} makes usernames that --no-usernames turns off")
    if args.verify_table is not None:
        if not is_database_url(args.verify):
            parser.error("--verify-table needs --verify postgresql://...")
        try:
            table_name("--verify-table", args.verify_table)
        except ConfigError as exc:
            parser.error(str(exc))
    if args.plot:
        try:
            check_plot_path(args.plot)
        except PlotUnavailable as exc:
            parser.error(str(exc))
        except BadPlotPath as exc:
            parser.error(f"argument --plot: {exc}")
    requests = args.requests
    if requests is None and args.duration is None:
        requests = DEFAULT_REQUESTS
    extra = {"run_id": args.run_id} if args.run_id else {}
    try:
        config = LoadConfig(
            args.url,
            requests=requests,
            duration=args.duration,
            concurrency=args.concurrency,
            rate=args.rate,
            arrivals=args.arrivals,
            drop_late=args.drop_late,
            method=args.method,
            path=args.path,
            prefix="lt-" if args.prefix is None else args.prefix,
            usernames=not args.no_usernames,
            timeout=args.timeout,
            **extra,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if config.stem is not None:
        digits = len(str(requests - 1)) if requests is not None else DURATION_DIGITS
        if (longest := len(config.stem) + digits) > USERNAME_MAX_LENGTH:
            # Each login would be answered 400 and never logged: no test of the server.
            parser.error(
                f"--prefix and --run-id make usernames of up to {longest} characters "
                f"(with '-' and a request number of {digits} digits), above "
                f"{USERNAME_MAX_LENGTH}, the server's default USERNAME_MAX_LENGTH"
            )
    return config


@contextmanager
def _progress_bar(config: LoadConfig, wanted: bool) -> Iterator[ProgressCallback | None]:
    console = Console(stderr=True)
    if not (wanted and console.is_terminal):
        yield None
        return
    # Refreshed from run_load's callback, not rich's own thread: a thread
    # redrawing would compete for the GIL with the loop sending requests.
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        auto_refresh=False,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=config.total or config.duration)

        def update(done: int, elapsed: float) -> None:
            rate = done / elapsed if elapsed > 0 else 0.0
            progress.update(
                task,
                completed=done if config.total else elapsed,
                description=f"{done:,} requests, {rate:,.0f}/s",
            )
            progress.refresh()

        yield update


def _describe(exc: Exception) -> str:
    # Never the URL: it may hold a password.
    if isinstance(exc, LogMissing):
        return str(exc)  # says it all, in words
    return f"{type(exc).__name__}: {exc}"


class _BadArgument(Exception):
    """An argument found wrong only once the run is under way, before anything is sent."""


async def _main(args: argparse.Namespace, config: LoadConfig) -> int:
    log = None
    if args.verify and config.stem is not None:
        # Read the log up to now: a reused run id would read as doubled logins,
        # and the verification then reads only the lines added by this run.
        log = open_source(args.verify, table=args.verify_table or "login_log", prefix=config.stem)
        try:
            found = await first_logged(log, config.stem)
        except Exception as exc:  # no such database, no permission: say so, no traceback
            raise _BadArgument(f"cannot read the log to verify: {_describe(exc)}") from None
        if found is not None:
            raise _BadArgument(
                f"run id {config.run_id!r} is already in the log ({found}): its logins "
                "would read as logged twice; choose another --run-id"
            )
    with _progress_bar(config, wanted=not (args.json or args.quiet)) as progress:
        summary = await run_load(config, progress=progress)
    verify = verify_error = None
    failures: list[str] = []  # after the run: told on stderr, exit status 1
    if log is not None:
        try:
            verify = await verify_log(
                log, summary.logins(), max_wait=args.verify_timeout, settle=args.verify_settle
            )
        except Exception as exc:  # still unreadable at --verify-timeout: a failed verification
            verify_error = f"cannot read the log to verify: {_describe(exc)}"
            failures.append(verify_error)
    plotted = False
    if args.plot:
        try:
            plot_summary(summary, args.plot)
            plotted = True
        except Exception as exc:  # the directory gone meanwhile, a full disk: keep the run
            failures.append(f"cannot draw the plot: {_describe(exc)}")
    if args.json:
        print(json.dumps(summary_dict(summary, verify, verify_error), ensure_ascii=False))
    else:
        print(summary_text(summary, verify))
        if plotted:
            print(f"plot         {args.plot}")
    for failure in failures:
        print(f"quart-app-loadtest: {failure}", file=sys.stderr)
    return 0 if not failures and (verify is None or verify.ok) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: the process's); return the exit status.

    See :data:`EPILOG` (the end of ``--help``) for the statuses.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    config = _config(parser, args)
    try:
        status = run_uvloop(_main(args, config))
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return status
    except _BadArgument as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (| head): no traceback, and nothing more to write.
        # stdout on /dev/null, or Python's own flush at exit fails again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command its signal ended
