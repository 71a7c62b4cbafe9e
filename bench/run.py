"""The login-log benchmark (issue 4): HTTP throughput and latency, and the writer alone.

Run from the repository root::

    .venv/bin/python bench/run.py --rounds 5 --duration 5 --concurrency 64 --out bench/results

HTTP part: one hypercorn (``hypercorn.toml``, ``-w 1``, a free loopback port, a
temporary log file) per configuration, all started up front and kept running;
only one is under load at a time. Every round measures every target once, so
slow drift on a shared machine (other jobs, CPU frequency) hits all targets
alike; medians over the rounds are reported. wrk is the load generator; without
it, ``python -m quart_app.loadtest`` is used instead (say so in any comparison).

Writer part: records per second into a file through the project's
``LogWriter`` + ``FileStore``, against one plain ``os.write`` per line (the
ceiling) and one ``await aiofiles`` write per line, in the same process.

Results: a table on stdout and ``results.md``, ``results.png``, ``results.json``
in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script (`python bench/run.py`) the repository root is not on sys.path;
# it is needed for `quart_app` (if not installed) and `bench.baselines`.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiofiles  # noqa: E402

from quart_app.records import LoginRecord, format_text, parse_line  # noqa: E402
from quart_app.stores.file import FileStore  # noqa: E402
from quart_app.writer import LogWriter  # noqa: E402

LUA_SCRIPT = ROOT / "bench" / "login.lua"
HYPERCORN_CONFIG = ROOT / "hypercorn.toml"

# ---------------------------------------------------------------------------
# What is measured
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """One hypercorn to start: which app, with which settings."""

    key: str
    app: str
    env: dict[str, str]


@dataclass(frozen=True)
class Target:
    """One thing to load: a server and whether to hit ``/`` or ``/login/``."""

    name: str
    server: str
    login: bool
    what: str


SERVERS = [
    ServerSpec("app", "quart_app.asgi:app", {"QUART_LOGIN_LOG_DURABLE": "false"}),
    ServerSpec("durable", "quart_app.asgi:app", {"QUART_LOGIN_LOG_DURABLE": "true"}),
    ServerSpec("naive", "bench.baselines.naive:app", {}),
    ServerSpec("background", "bench.baselines.background:app", {}),
]

TARGETS = [
    Target("/", "app", False, "`GET /`, no logging: the ceiling"),
    Target("login", "app", True, "`GET /login/`, quart_app default (queued, batched writer)"),
    Target("durable", "durable", True, "`GET /login/`, quart_app `LOGIN_LOG_DURABLE=true`"),
    Target("naive", "naive", True, "baseline: aiofiles open/append/close awaited per login"),
    Target("background", "background", True, "baseline: `add_background_task`, one append each"),
]

WRITERS = {
    "LogWriter": "quart_app `LogWriter` + `FileStore` (submit each line, `stop()` drains)",
    "os.write": "plain synchronous `os.write`, one call per line, `O_APPEND` (the ceiling)",
    "aiofiles": "one `await f.write(line)` per line, aiofiles file opened once, unbuffered",
}


@dataclass(frozen=True)
class Goal:
    """A ratio the issue asks for, and which way it must go."""

    label: str
    numerator: str
    denominator: str
    threshold: float
    at_least: bool  # True: ratio >= threshold; False: ratio <= threshold


GOALS = [
    Goal("/login/ rps vs / rps (default mode)", "rps:login", "rps:/", 0.90, True),
    Goal("durable /login/ rps vs / rps", "rps:durable", "rps:/", 0.75, True),
    Goal("/login/ rps vs naive rps", "rps:login", "rps:naive", 1.4, True),
    Goal("writer records/s vs plain os.write", "writer:LogWriter", "writer:os.write", 0.6, True),
    Goal(
        "writer records/s vs aiofiles per record", "writer:LogWriter", "writer:aiofiles", 50, True
    ),
    Goal("/login/ p99 vs / p99 (same concurrency)", "p99:login", "p99:/", 1.5, False),
]

# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; fields follow the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (hypercorn ``-w 1`` serves from a child process)."""
    children = _proc_children()
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time used so far by ``pids`` (Linux ``/proc``; 0 elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (Linux ``/proc/stat``; 0 elsewhere)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    # guest time is already counted in user time; leave it out so it is not counted twice.
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds used by this process's finished children (the load generator runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_probe() -> float:
    """Milliseconds a fixed pure-Python loop takes now: how fast a core is at the moment.

    On a shared VM the host's other tenants slow the cores down without any of
    it showing up inside the machine; this probe makes that visible.
    """
    start = time.perf_counter()
    total = 0
    for i in range(300_000):
        total += i % 7
    return 1000 * (time.perf_counter() - start)


@dataclass
class Server:
    """A running hypercorn serving one :class:`ServerSpec`."""

    spec: ServerSpec
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    stderr_path: Path
    _log_offset: int = 0

    @property
    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def worker_pid(self) -> int:
        """The process that runs the app (the child, with ``-w 1``)."""
        tree = self.pids
        return tree[1] if len(tree) > 1 else tree[0]

    def new_lines(self) -> int:
        """Lines appended to the log file since the last call."""
        try:
            with self.log_path.open("rb") as file:
                file.seek(self._log_offset)
                data = file.read()
        except FileNotFoundError:
            return 0
        self._log_offset += len(data)
        return data.count(b"\n")

    def settle(self, timeout: float = 60.0) -> float:
        """Wait until the server is idle again; return the seconds waited.

        The background baseline (and any writer) may still be working through a
        backlog after the load stops; measuring the next target then would
        charge it for this one's leftovers, so wait until the server's CPU use
        drops to almost nothing.
        """
        start = time.monotonic()
        pids = self.pids
        window = 0.25
        while time.monotonic() - start < timeout:
            before = cpu_seconds(pids)
            time.sleep(window)
            if cpu_seconds(pids) - before < 0.03 * window:
                break
        return time.monotonic() - start

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"hypercorn for {self.spec.key} exited ({self.process.returncode}):\n"
                + self.stderr_path.read_text(errors="replace")[-4000:]
            )


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    # QUART_* settings from the caller's shell would silently change what is
    # measured (another log format, a proxy middleware...): start from none.
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_")}
    env.update(extra)
    return env


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            with urllib.request.urlopen(server.url + "/", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"hypercorn for {server.spec.key} did not answer within {timeout} s")


@contextmanager
def start_server(spec: ServerSpec, workdir: Path, workers: int = 1) -> Iterator[Server]:
    """Start ``hypercorn --config hypercorn.toml -w WORKERS`` for ``spec``; stop it afterwards.

    ``-w`` is always given so that the number of processes serving never
    depends on the machine or on edits to hypercorn.toml.
    """
    port = free_port()
    log_path = workdir / f"{spec.key}-login.log"
    stderr_path = workdir / f"{spec.key}-hypercorn.log"
    env = _clean_env({"QUART_LOGIN_LOG_PATH": str(log_path), **spec.env})
    command = [
        sys.executable, "-m", "hypercorn", "--config", str(HYPERCORN_CONFIG),
        "-b", f"127.0.0.1:{port}", "-w", str(workers), spec.app,
    ]  # fmt: skip
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=ROOT,  # `bench.baselines.*` is imported relative to the working directory
            env=env,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,  # its own process group, to kill the worker too
        )
    server = Server(spec, process, f"http://127.0.0.1:{port}", log_path, stderr_path)
    try:
        _wait_ready(server, timeout=30)
        server.new_lines()  # the readiness probe logged nothing, but start from here
        yield server
    finally:
        if process.poll() is None:
            # SIGTERM: a graceful stop, which drains the writer as in production.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=70)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# ---------------------------------------------------------------------------
# Load generators
# ---------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What one load run measured (latencies in milliseconds)."""

    requests: int
    rps: float
    p50: float
    p90: float
    p99: float
    max: float
    errors: int
    non_2xx: int


class LoadGenerator:
    """Runs load against a URL for a while and reports :class:`LoadResult`."""

    name = "?"
    version = "?"

    def run(self, base_url: str, login: bool, tag: str, duration: float) -> LoadResult:
        raise NotImplementedError


class Wrk(LoadGenerator):
    """wrk with ``bench/login.lua``: unique usernames and a JSON summary."""

    name = "wrk"

    def __init__(self, binary: str, threads: int, concurrency: int) -> None:
        self.binary = binary
        self.threads = threads
        self.concurrency = concurrency
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
        first = (out.stdout + out.stderr).strip().splitlines()
        self.version = first[0].split(" Copyright")[0] if first else "wrk (unknown version)"

    def run(self, base_url: str, login: bool, tag: str, duration: float) -> LoadResult:
        command = [
            self.binary, f"-t{self.threads}", f"-c{self.concurrency}",
            f"-d{max(1, round(duration))}s", "--timeout", "10s",
            "-s", str(LUA_SCRIPT), base_url, "--", "login" if login else "root", tag,
        ]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        for line in out.stdout.splitlines():
            if line.startswith("WRK_JSON "):
                data = json.loads(line.removeprefix("WRK_JSON "))
                break
        else:
            raise RuntimeError(f"wrk gave no summary:\n{out.stdout}\n{out.stderr}")
        errors = data["errors"]
        latency = data["latency_ms"]
        return LoadResult(
            requests=data["requests"],
            rps=data["rps"],
            p50=latency["p50"],
            p90=latency["p90"],
            p99=latency["p99"],
            max=latency["max"],
            errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
            non_2xx=errors["status"],
        )


class Loadtest(LoadGenerator):
    """The project's aiohttp load generator, ``python -m quart_app.loadtest``.

    The fallback when wrk is missing. It is Python sharing the machine with the
    server, so it takes more CPU per request than wrk: absolute numbers are
    lower, and only ratios measured with the same generator compare.
    """

    name = "quart_app.loadtest"

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.version = "quart_app.loadtest (aiohttp " + _version("aiohttp") + ")"

    def run(self, base_url: str, login: bool, tag: str, duration: float) -> LoadResult:
        # Its usernames are --prefix + --run-id + "-" + n: unique per run, like login.lua's.
        what = ["--run-id", tag, "--prefix", "lt-"] if login else ["--path", "/", "--no-usernames"]
        command = [
            sys.executable, "-m", "quart_app.loadtest", base_url, *what,
            "--concurrency", str(self.concurrency), "--duration", str(duration),
            "--json", "--quiet",
        ]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
        data = _last_json_object(out.stdout)
        if data is None or "rps" not in data:
            raise RuntimeError(f"quart_app.loadtest gave no summary:\n{out.stdout}\n{out.stderr}")
        latency = data.get("latency_ms") or {}
        statuses = {str(k): int(v) for k, v in (data.get("statuses") or {}).items()}
        answered_2xx = sum(n for status, n in statuses.items() if status.startswith("2"))
        nan = float("nan")
        return LoadResult(
            requests=answered_2xx if statuses else int(data.get("requests", 0)),
            rps=float(data["rps"]),
            p50=float(latency.get("p50", nan)),
            p90=float(latency.get("p90", nan)),
            p99=float(latency.get("p99", nan)),
            max=float(latency.get("max", nan)),
            errors=int(data.get("errors", 0)),
            non_2xx=sum(n for status, n in statuses.items() if not status.startswith("2")),
        )


def _last_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object printed last (whole output, or the last line that parses)."""
    try:
        data = json.loads(text)
        return data if isinstance(data, dict) else None
    except ValueError:
        pass
    for line in reversed(text.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


def pick_load_generator(choice: str, threads: int, concurrency: int) -> LoadGenerator:
    """wrk if installed (or asked for), else the project's loadtest tool."""
    binary = shutil.which("wrk")
    if choice in ("auto", "wrk") and binary:
        return Wrk(binary, threads, concurrency)
    if choice == "wrk":
        sys.exit("wrk is not installed: apt-get install wrk (or brew install wrk)")
    if choice == "auto":
        print(
            "wrk not found: install it for the reference numbers (apt-get install wrk, "
            "brew install wrk); falling back to python -m quart_app.loadtest, which "
            "competes with the server for CPU, so numbers are lower and noisier.",
            file=sys.stderr,
        )
    if importlib.util.find_spec("quart_app.loadtest") is None:
        sys.exit("neither wrk nor quart_app.loadtest is available: install wrk")
    return Loadtest(concurrency)


# ---------------------------------------------------------------------------
# HTTP rounds
# ---------------------------------------------------------------------------


@dataclass
class HttpMeasurement:
    """One target measured once."""

    target: str
    round: int
    result: LoadResult
    server_cpu_s: float
    lines_logged: int
    settle_s: float
    other_cores: float
    probe_ms: float


def measure(
    gen: LoadGenerator,
    server: Server,
    target: Target,
    tag: str,
    duration: float,
    round_no: int = 0,
) -> HttpMeasurement:
    """Load ``target`` once and wait for the server to be idle again."""
    probe = cpu_probe()
    server.check_alive()
    server.new_lines()
    pids = server.pids
    cpu_before = cpu_seconds(pids)
    machine_before, client_before = machine_busy_seconds(), children_cpu_seconds()
    wall = time.monotonic()
    result = gen.run(server.url, target.login, tag, duration)
    wall = time.monotonic() - wall
    cpu = cpu_seconds(pids) - cpu_before
    # What the machine did besides this server and the load generator: other
    # jobs sharing the cores, the main source of noise on a shared machine.
    other = (machine_busy_seconds() - machine_before) - cpu
    other -= children_cpu_seconds() - client_before
    settle = server.settle()
    server.check_alive()
    return HttpMeasurement(
        target.name,
        round_no,
        result,
        cpu,
        server.new_lines(),
        settle,
        max(other, 0.0) / wall,
        probe,
    )


def run_http(
    args: argparse.Namespace, gen: LoadGenerator, workdir: Path, say: Callable[[str], None]
) -> list[HttpMeasurement]:
    """Start every server, warm each target up, then run the interleaved rounds."""
    measurements: list[HttpMeasurement] = []
    targets = [t for t in TARGETS if t.name in args.targets]
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        for spec in SERVERS:
            if any(t.server == spec.key for t in targets):
                servers[spec.key] = stack.enter_context(start_server(spec, workdir, args.workers))
                say(f"  started {spec.key:<10} {spec.app:<32} {servers[spec.key].url}")
        if args.warmup > 0:
            say(f"  warm-up: {args.warmup:g} s per target (not recorded)")
            for target in targets:
                measure(gen, servers[target.server], target, "warmup", args.warmup)
        for round_no in range(1, args.rounds + 1):
            # Rotate the order each round: every target is still measured once
            # per round, and none is always the one measured right after startup
            # or right after the heaviest one.
            shift = (round_no - 1) % len(targets)
            for target in targets[shift:] + targets[:shift]:
                tag = f"r{round_no}{target.server}"
                m = measure(gen, servers[target.server], target, tag, args.duration, round_no)
                measurements.append(m)
                say(
                    f"  round {round_no}/{args.rounds} {target.name:<10} "
                    f"{m.result.rps:7.0f} req/s  p50 {m.result.p50:6.1f} ms  "
                    f"p99 {m.result.p99:6.1f} ms  "
                    f"server CPU {1e6 * m.server_cpu_s / max(m.result.requests, 1):4.0f} us/req  "
                    f"others {m.other_cores:4.2f} cores"
                    + (f"  logged {m.lines_logged}" if target.login else "")
                    + (f"  (settled {m.settle_s:.1f} s)" if m.settle_s > 1 else "")
                )
    return measurements


# ---------------------------------------------------------------------------
# The writer alone
# ---------------------------------------------------------------------------


def make_lines(count: int) -> list[bytes]:
    """``count`` distinct lines in the project's text format, formatted up front
    so that only writing them is timed."""
    start = datetime.now(UTC)
    return [
        format_text(LoginRecord(f"bench-user-{i}", start + timedelta(microseconds=i), "127.0.0.1"))
        for i in range(count)
    ]


async def _logwriter(path: Path, lines: list[bytes]) -> float:
    # The writer takes records and formats them itself (in its thread); the
    # records are parsed back from the same lines up front, untimed.
    records = [parse_line(line.decode()) for line in lines]
    writer = LogWriter(FileStore(str(path)), logger=logging.getLogger("bench.writer"))
    await writer.start()  # opening the file is not timed, for none of the three
    start = time.perf_counter()
    for record in records:
        await writer.submit(record)
    await writer.stop()
    elapsed = time.perf_counter() - start
    if writer.written != len(lines):
        raise RuntimeError(f"LogWriter wrote {writer.written} of {len(lines)} records")
    return elapsed


async def _aiofiles_per_record(path: Path, lines: list[bytes]) -> float:
    # buffering=0, as FileStore: each record is its own write(2), like os.write.
    async with aiofiles.open(path, "ab", buffering=0) as file:
        start = time.perf_counter()
        for line in lines:
            await file.write(line)
    return time.perf_counter() - start


def _os_write(path: Path, lines: list[bytes]) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        start = time.perf_counter()
        for line in lines:
            os.write(fd, line)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def _run_async(
    coro_fn: Callable[[Path, list[bytes]], Any], path: Path, lines: list[bytes]
) -> float:
    # The server runs uvloop (hypercorn.toml), so the writer is timed on it too.
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro_fn(path, lines))


@dataclass
class WriterMeasurement:
    """One writer run: how many records, how long."""

    writer: str
    round: int
    records: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.records / self.seconds


def run_writers(
    args: argparse.Namespace, workdir: Path, say: Callable[[str], None]
) -> list[WriterMeasurement]:
    """Time the three writers, interleaved round by round, each into a fresh file."""
    many = make_lines(args.writer_records)
    few = many[: args.aiofiles_records]
    runs: dict[str, tuple[Callable[[Path, list[bytes]], float], list[bytes]]] = {
        "LogWriter": (lambda p, ls: _run_async(_logwriter, p, ls), many),
        "os.write": (_os_write, many),
        "aiofiles": (lambda p, ls: _run_async(_aiofiles_per_record, p, ls), few),
    }
    out: list[WriterMeasurement] = []
    for round_no in range(1, args.rounds + 1):
        for name, (run, lines) in runs.items():
            path = workdir / f"writer-{name}.log"
            path.unlink(missing_ok=True)
            seconds = run(path, lines)
            size = path.stat().st_size
            if size != sum(map(len, lines)):
                raise RuntimeError(f"{name} left {size} bytes, expected {sum(map(len, lines))}")
            path.unlink()
            out.append(WriterMeasurement(name, round_no, len(lines), seconds))
            say(
                f"  round {round_no}/{args.rounds} {name:<10} {len(lines):>7} records "
                f"in {seconds:6.3f} s = {len(lines) / seconds:>10,.0f} records/s"
            )
    return out


# ---------------------------------------------------------------------------
# Summaries, goals, report
# ---------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(
    http: list[HttpMeasurement], writers: list[WriterMeasurement]
) -> dict[str, dict[str, Any]]:
    """Medians (and ranges) per HTTP target and per writer."""
    summary: dict[str, dict[str, Any]] = {"http": {}, "writer": {}}
    for target in TARGETS:
        runs = [m for m in http if m.target == target.name]
        if not runs:
            continue
        requests = sum(m.result.requests for m in runs)
        summary["http"][target.name] = {
            "rps": _median([m.result.rps for m in runs]),
            "rps_min": min(m.result.rps for m in runs),
            "rps_max": max(m.result.rps for m in runs),
            "rps_rounds": [m.result.rps for m in runs],
            "p50": _median([m.result.p50 for m in runs]),
            "p90": _median([m.result.p90 for m in runs]),
            "p99": _median([m.result.p99 for m in runs]),
            "p99_rounds": [m.result.p99 for m in runs],
            "max": max(m.result.max for m in runs),
            "cpu_us_per_request": _median(
                [1e6 * m.server_cpu_s / max(m.result.requests, 1) for m in runs]
            ),
            "requests": requests,
            "errors": sum(m.result.errors for m in runs),
            "non_2xx": sum(m.result.non_2xx for m in runs),
            "lines_logged": sum(m.lines_logged for m in runs),
            "other_cores_median": _median([m.other_cores for m in runs]),
            "other_cores_max": max(m.other_cores for m in runs),
        }
    for name in WRITERS:
        runs_w = [m for m in writers if m.writer == name]
        if not runs_w:
            continue
        rates = [m.per_second for m in runs_w]
        summary["writer"][name] = {
            "records": runs_w[0].records,
            "per_second": _median(rates),
            "per_second_min": min(rates),
            "per_second_max": max(rates),
            "per_second_rounds": rates,
        }
    return summary


def _metric(summary: dict[str, dict[str, Any]], key: str) -> tuple[float, list[float]] | None:
    """The median named by ``key`` (``rps:login``, ``writer:os.write``...) and its rounds."""
    kind, name = key.split(":", 1)
    if kind == "writer":
        entry = summary["writer"].get(name)
        return (entry["per_second"], entry["per_second_rounds"]) if entry else None
    entry = summary["http"].get(name)
    return (entry[kind], entry[f"{kind}_rounds"]) if entry else None


def evaluate_goals(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal's ratio of medians and whether it passes (None: not measured).

    The ratios within each round are reported too: both sides of a round were
    measured minutes apart at most, so their spread shows how much of a
    difference is noise from other jobs on the machine.
    """
    out = []
    for goal in GOALS:
        num, den = _metric(summary, goal.numerator), _metric(summary, goal.denominator)
        ratio = num[0] / den[0] if num is not None and den is not None and den[0] else None
        rounds = [n / d for n, d in zip(num[1], den[1], strict=False) if d] if num and den else []
        passed = (
            None
            if ratio is None
            else ratio >= goal.threshold
            if goal.at_least
            else ratio <= goal.threshold
        )
        out.append(
            {
                "goal": goal.label,
                "ratio": ratio,
                "threshold": goal.threshold,
                "comparison": ">=" if goal.at_least else "<=",
                "passed": passed,
                "round_ratios": rounds,
            }
        )
    return out


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info(gen: LoadGenerator | None) -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {
            p: _version(p) for p in ("quart", "hypercorn", "aiofiles", "blinker", "uvloop")
        },
        "load_generator": gen.version if gen else None,
    }


def command_line() -> str:
    """The command as typed from the repository root, to rerun it."""
    # sys.executable as invoked (not resolved): `.venv/bin/python`, not the symlink's target.
    python = Path(sys.executable)
    python = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python
    script = Path(sys.argv[0]).resolve()
    script_text = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else str(script)
    return shlex.join([str(python), script_text, *sys.argv[1:]])


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def markdown_report(report: dict[str, Any]) -> str:
    """The results as Markdown: machine line, HTTP table, writer table, goals."""
    info, args, summary = report["machine"], report["args"], report["summary"]
    pkgs = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    if str(info["load_generator"]).startswith("wrk"):
        client = f"wrk `-t{args['threads']}` with bench/login.lua"
    else:
        client = "`python -m quart_app.loadtest` (Python: the client may be the bottleneck)"
    lines = [
        "# Login log benchmark",
        "",
        f"- **Machine:** {info['cores']} cores (os.cpu_count), {info['cpu']}, {info['os']}; "
        f"Python {info['python']}; {pkgs}; load generator: {info['load_generator']}",
        f"- **Command:** `{report['command']}`",
        f"- **Date:** {report['date']}",
        f"- **Setup:** hypercorn with `hypercorn.toml` and `-w {args['workers']}` on loopback; "
        f"{args['rounds']} rounds x {args['duration']:g} s per target, concurrency "
        f"{args['concurrency']}, {client}; targets interleaved round by round; "
        "medians over rounds (min-max in brackets). The load generator and the server share "
        "the machine's cores, so the numbers are lower than on a separate client, but the "
        "same for every target.",
        "",
    ]
    http = summary["http"]
    if http:
        ceiling = http.get("/", {}).get("rps")
        lines += [
            "## HTTP",
            "",
            "| target | what | req/s | vs `/` | p50 ms | p90 ms | p99 ms | server CPU us/req "
            "| logged / answered | errors | others (cores) |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for target in TARGETS:
            s = http.get(target.name)
            if not s:
                continue
            vs = _fmt(s["rps"] / ceiling, 2) + "x" if ceiling else "n/a"
            logged = f"{s['lines_logged']:,} / {s['requests']:,}" if target.login else "-"
            lines.append(
                f"| {target.name} | {target.what} | {_fmt(s['rps'])} "
                f"({_fmt(s['rps_min'])}-{_fmt(s['rps_max'])}) | {vs} | {_fmt(s['p50'], 1)} "
                f"| {_fmt(s['p90'], 1)} | {_fmt(s['p99'], 1)} | {_fmt(s['cpu_us_per_request'])} "
                f"| {logged} | {s['errors'] + s['non_2xx']} "
                f"| {s['other_cores_median']:.2f} (max {s['other_cores_max']:.2f}) |"
            )
        lines += [
            "",
            '"logged / answered": lines in the log file against responses the load '
            "generator counted; more lines than answers is fine (requests still in flight "
            'when a run ends are logged but not counted). "server CPU": CPU time of the '
            'hypercorn processes per answered request. "others": cores used by other '
            "processes on the machine meanwhile (not the server, not the load generator): "
            "noise.",
            "",
        ]
    writer = summary["writer"]
    if writer:
        ceiling = writer.get("os.write", {}).get("per_second")
        lines += [
            "## Writer alone",
            "",
            "| writer | how | records | records/s | vs os.write |",
            "|---|---|--:|--:|--:|",
        ]
        for name, how in WRITERS.items():
            s = writer.get(name)
            if not s:
                continue
            vs = _fmt(s["per_second"] / ceiling, 2) + "x" if ceiling else "n/a"
            lines.append(
                f"| {name} | {how} | {s['records']:,} | {_fmt(s['per_second'])} "
                f"({_fmt(s['per_second_min'])}-{_fmt(s['per_second_max'])}) | {vs} |"
            )
        lines += [""]
    lines += [
        "## Goals",
        "",
        "| goal | ratio of medians | target | result | ratio per round (min / median / max) |",
        "|---|--:|--:|---|--:|",
    ]
    for g in report["goals"]:
        verdict = {True: "PASS", False: "**FAIL**", None: "not measured"}[g["passed"]]
        per_round = g["round_ratios"]
        spread = (
            f"{min(per_round):.2f} / {statistics.median(per_round):.2f} / {max(per_round):.2f}"
            if per_round
            else "n/a"
        )
        lines.append(
            f"| {g['goal']} | {_fmt(g['ratio'], 2)} | {g['comparison']} {g['threshold']:g} "
            f"| {verdict} | {spread} |"
        )
    lines += [
        "",
        "PASS/FAIL is judged on the ratio of medians. The per-round ratios compare the two "
        "sides measured in the same round, which cancels slow drift of the machine.",
        "",
    ]
    other = [h["other_cores_max"] for h in report["summary"]["http"].values()]
    if other and max(other) > 0.15:
        lines += [
            f"**Noise:** other processes used up to {max(other):.2f} of the "
            f'{info["cores"]} cores during some measurements (column "others"); '
            "rerun on a quiet machine for numbers to quote.",
            "",
        ]
    probes = [m["probe_ms"] for m in report["raw"]["http"]]
    if probes:
        lines += [
            f"**CPU speed:** a fixed pure-Python loop run before each measurement took "
            f"{min(probes):.1f} to {max(probes):.1f} ms (median "
            f"{statistics.median(probes):.1f}): at times a core was "
            f"{100 * (max(probes) / min(probes) - 1):.0f}% slower than at others (other jobs "
            "here, or on a VM other tenants of the host). Differences of that size between "
            "single measurements are noise.",
            "",
        ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Three panels: req/s per target, p99 per target, writer records/s."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    summary = report["summary"]
    http, writer = summary["http"], summary["writer"]
    panels = (2 if http else 0) + (1 if writer else 0)
    if not panels:
        return
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 5.2), squeeze=False)
    axes_iter = iter(axes[0])
    colours = {
        "/": "#8c8c8c",
        "login": "#1f77b4",
        "durable": "#17becf",
        "naive": "#d62728",
        "background": "#ff7f0e",
    }
    if http:
        names = [t.name for t in TARGETS if t.name in http]
        x = range(len(names))
        ceiling = http.get("/", {}).get("rps")

        ax = next(axes_iter)
        rps = [http[n]["rps"] for n in names]
        low = [http[n]["rps"] - http[n]["rps_min"] for n in names]
        high = [http[n]["rps_max"] - http[n]["rps"] for n in names]
        ax.bar(x, rps, yerr=[low, high], capsize=4, color=[colours[n] for n in names])
        for i, n in enumerate(names):
            ax.scatter(
                [i] * len(http[n]["rps_rounds"]), http[n]["rps_rounds"], s=10, c="k", zorder=3
            )
            label = f"{rps[i]:,.0f}" + (f"\n{rps[i] / ceiling:.2f}x /" if ceiling else "")
            ax.annotate(label, (i, rps[i] / 2), ha="center", va="center", color="white",
                        fontsize=9, fontweight="bold")  # fmt: skip
        if ceiling:
            ax.axhline(ceiling, color="k", lw=1, ls="--", label="/ (ceiling)")
            ax.axhline(0.90 * ceiling, color="#1f77b4", lw=1, ls=":", label="0.90x / (login goal)")
            ax.axhline(
                0.75 * ceiling, color="#17becf", lw=1, ls=":", label="0.75x / (durable goal)"
            )
        ax.set_xticks(list(x), names)
        ax.set_ylabel("requests / s (median; bars: min-max, dots: rounds)")
        ax.set_title(f"HTTP throughput, {report['args']['concurrency']} connections")
        ax.legend(loc="upper right", fontsize=8)
        ax.set_ylim(0, max(max(h["rps_max"] for h in http.values()), ceiling or 0) * 1.15)

        ax = next(axes_iter)
        p99 = [http[n]["p99"] for n in names]
        ax.bar(x, p99, color=[colours[n] for n in names])
        for i, n in enumerate(names):
            ax.scatter(
                [i] * len(http[n]["p99_rounds"]), http[n]["p99_rounds"], s=10, c="k", zorder=3
            )
            ax.annotate(f"{p99[i]:.1f} ms", (i, p99[i] / 2), ha="center", va="center",
                        color="white", fontsize=9, fontweight="bold")  # fmt: skip
        root_p99 = http.get("/", {}).get("p99")
        if root_p99:
            ax.axhline(1.5 * root_p99, color="k", lw=1, ls=":", label="1.5x p99 of / (login goal)")
            ax.legend(loc="upper left", fontsize=8)
        ax.set_xticks(list(x), names)
        ax.set_ylabel("p99 latency, ms (median of rounds)")
        ax.set_title("HTTP p99 latency")

    if writer:
        ax = next(axes_iter)
        names = list(writer)
        rates = [writer[n]["per_second"] for n in names]
        bar_colours = {"LogWriter": "#1f77b4", "os.write": "#8c8c8c", "aiofiles": "#d62728"}
        ax.bar(range(len(names)), rates, color=[bar_colours[n] for n in names])
        ax.set_yscale("log")
        ceiling = writer.get("os.write", {}).get("per_second")
        for i, n in enumerate(names):
            label = f"{rates[i]:,.0f}/s"
            if ceiling and n != "os.write":
                label += f"\n{rates[i] / ceiling:.2f}x os.write"
            if n == "LogWriter" and "aiofiles" in writer:
                label += f"\n{rates[i] / writer['aiofiles']['per_second']:.0f}x aiofiles"
            ax.annotate(label, (i, rates[i]), ha="center", va="bottom", fontsize=9,
                        xytext=(0, 2), textcoords="offset points")  # fmt: skip
        ax.set_xticks(
            range(len(names)),
            [f"{n}{' (per line)' if n != 'LogWriter' else ''}\n{writer[n]['records']:,} records"
             for n in names],
        )  # fmt: skip
        ax.set_ylim(min(rates) / 3, max(rates) * 6)
        ax.set_ylabel("records / s, log scale (median of rounds)")
        ax.set_title("Writer alone: records into a file")

    info = report["machine"]
    fig.suptitle(
        f"quart_app login log - {info['cores']} cores {info['cpu']}, Python {info['python']}, "
        f"{info['load_generator'] or ''} - {report['date']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(report: dict[str, Any]) -> None:
    """The Markdown tables double as the terminal summary."""
    print()
    print(markdown_report(report))


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per target (default 5)")
    parser.add_argument("--duration", type=float, default=5, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=64, help="open connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="hypercorn -w: 1 (default) is one worker process; 0 serves from hypercorn's "
        "own process, as hypercorn.toml's workers = 0 does",
    )
    parser.add_argument("--warmup", type=float, default=2, help="warm-up seconds per target")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--load-generator",
        choices=["auto", "wrk", "loadtest"],
        default="auto",
        help="auto: wrk if installed, else python -m quart_app.loadtest",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        default=[t.name for t in TARGETS],
        choices=[t.name for t in TARGETS],
        help="HTTP targets to measure (default: all)",
    )
    parser.add_argument("--writer-records", type=int, default=200_000)
    parser.add_argument("--aiofiles-records", type=int, default=20_000)
    parser.add_argument("--skip-http", action="store_true", help="only the writer benchmark")
    parser.add_argument("--skip-writer", action="store_true", help="only the HTTP benchmark")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="RESULTS.json",
        help="measure nothing: redo results.md and results.png in --out from a results.json",
    )
    args = parser.parse_args(argv)
    if args.concurrency < args.threads:
        parser.error("--concurrency must be at least --threads")
    args.aiofiles_records = min(args.aiofiles_records, args.writer_records)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the report; the exit status does not depend on goals."""
    args = parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    if args.from_json:
        report = json.loads(args.from_json.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(markdown_report(report))
        plot(report, args.out / "results.png")
        print_summary(report)
        return 0

    gen = (
        None
        if args.skip_http
        else pick_load_generator(args.load_generator, args.threads, args.concurrency)
    )
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(),
        "machine": machine_info(gen),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    say(f"machine: {json.dumps(report['machine'])}")
    http: list[HttpMeasurement] = []
    writers: list[WriterMeasurement] = []
    with tempfile.TemporaryDirectory(prefix="quart-bench-") as tmp:
        workdir = Path(tmp)
        if gen is not None:
            say(f"HTTP: {gen.version}, {args.concurrency} connections, {args.rounds} rounds")
            http = run_http(args, gen, workdir, say)
        if not args.skip_writer:
            say(
                f"writer: {args.writer_records:,} records "
                f"({args.aiofiles_records:,} for aiofiles per record), {args.rounds} rounds"
            )
            writers = run_writers(args, workdir, say)

    report["summary"] = summarize(http, writers)
    report["goals"] = evaluate_goals(report["summary"])
    report["raw"] = {
        "http": [asdict(m) for m in http],
        "writer": [asdict(m) | {"per_second": m.per_second} for m in writers],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (args.out / "results.md").write_text(markdown_report(report))
    plot(report, args.out / "results.png")
    print_summary(report)
    say(f"wrote {args.out / 'results.md'}, results.png, results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
