"""HTTP load with wrk, one measurement at a time, targets interleaved round by round."""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .plan import Target, measured_pairs
from .servers import Running, busy_seconds, cpu_probe

LUA_SCRIPT = Path(__file__).resolve().parent / "login.lua"


@dataclass
class Wrk:
    """wrk with ``login.lua``: usernames used once in the whole run, and a JSON summary.

    wrk only: a Python client shares the cores with the server and measures
    itself as much as the server (bench/README.md).
    """

    threads: int
    concurrency: int
    binary: str = ""

    def __post_init__(self) -> None:
        self.binary = self.binary or shutil.which("wrk") or ""
        if not self.binary:
            raise SystemExit("the benchmark needs wrk: apt-get install wrk (or brew install wrk)")

    @property
    def version(self) -> str:
        """wrk's own version line."""
        out = subprocess.run([self.binary, "-v"], capture_output=True, text=True, check=False)
        first = (out.stdout + out.stderr).strip().splitlines()
        return first[0].split(" Copyright")[0] if first else "wrk (unknown version)"

    def start(self, url: str, mode: str, tag: str, duration: float) -> subprocess.Popen[str]:
        """Start loading ``url`` for ``duration`` seconds in login.lua's ``mode``."""
        command = [
            self.binary, f"-t{self.threads}", f"-c{self.concurrency}",
            f"-d{max(1, round(duration))}s", "--timeout", "10s",
            "-s", str(LUA_SCRIPT), url, "--", mode, tag,
        ]  # fmt: skip
        return subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_on_the_load_core,
        )

    @staticmethod
    def summary(process: subprocess.Popen[str]) -> dict:
        """The summary of a wrk :meth:`start` ed, once it has finished."""
        out, err = process.communicate()
        for line in out.splitlines():
            if line.startswith("WRK_JSON "):
                return json.loads(line.removeprefix("WRK_JSON "))
        raise RuntimeError(f"wrk gave no summary:\n{out}\n{err}")


@dataclass
class Measurement:
    """One target measured once.

    ``answered``: answers wrk counted below 400; ``logged``: the log's new lines (or
    rows), read with the load-test tool's reader; ``doubled``: usernames among
    them written more than once (each was sent once). ``database_cpu_s``: the
    CPU time of the database's processes, for a target that logs into one.
    ``others``: cores used meanwhile by processes other than these and wrk
    (noise).
    """

    target: str
    round: int
    rps: float
    p50: float
    p90: float
    p99: float
    max: float
    answered: int
    errors: int
    server_cpu_s: float
    database_cpu_s: float
    logged: int
    doubled: int
    others: float
    probe_ms: float
    settle_s: float
    pair: str = ""  # "TARGET vs REFERENCE" when measured as one side of a goal's pair

    @property
    def cpu_us_per_request(self) -> float:
        """Server CPU microseconds per answered request."""
        return 1e6 * self.server_cpu_s / max(self.answered, 1)


def _on_the_load_core() -> None:
    # wrk on the last core; single-process servers share the first (servers.py).
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {(os.cpu_count() or 1) - 1})


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def measure(
    wrk: Wrk, sides: list[tuple[Running, Target]], tag: str, duration: float, round_no: int = 0
) -> list[Measurement]:
    """Load each side's target on its server at the same time, check their logs, settle.

    Two sides loaded together share the same moments of the machine: their
    ratio does not depend on how fast the machine happened to be.
    """
    probe = cpu_probe()
    for running, _ in sides:
        running.check_alive()
        await running.log.read()  # from here on
    cpu_before = [(r.server.cpu_seconds(), r.database_cpu_seconds()) for r, _ in sides]
    busy_before, wrk_before = busy_seconds(), _children_cpu()
    wall = time.monotonic()
    loads = [
        wrk.start(r.server.url, t.mode, f"{tag}{i}", duration) for i, (r, t) in enumerate(sides)
    ]
    results = [Wrk.summary(load) for load in loads]
    wall = time.monotonic() - wall
    used = [
        (r.server.cpu_seconds() - cpu, r.database_cpu_seconds() - db)
        for (r, _), (cpu, db) in zip(sides, cpu_before, strict=True)
    ]
    others = busy_seconds() - busy_before - (_children_cpu() - wrk_before)
    others -= sum(cpu + db for cpu, db in used)
    settle = max(running.settle() for running, _ in sides)
    measurements = []
    for (running, target), data, (cpu, db_cpu) in zip(sides, results, used, strict=True):
        running.check_alive()
        usernames = (await running.log.read()).usernames
        errors = data["errors"]
        answered = data["requests"] - errors["status"]
        if target.login and len(set(usernames)) < answered:
            raise RuntimeError(
                f"{target.name}: {answered} logins answered, only {len(set(usernames))} logged"
            )
        latency = data["latency_ms"]
        measurements.append(
            Measurement(
                target=target.name,
                round=round_no,
                rps=answered / data["duration_s"],  # answers, as CPU per request counts
                p50=latency["p50"],
                p90=latency["p90"],
                p99=latency["p99"],
                max=latency["max"],
                answered=answered,
                errors=sum(errors.values()),
                server_cpu_s=cpu,
                database_cpu_s=db_cpu,
                logged=len(usernames),
                doubled=len(usernames) - len(set(usernames)),
                others=max(others, 0.0) / wall,
                probe_ms=probe,
                settle_s=settle,
            )
        )
    return measurements


async def run_rounds(
    wrk: Wrk,
    servers: dict[str, Running],
    targets: list[Target],
    *,
    rounds: int,
    duration: float,
    warmup: float,
    say: Callable[[str], None],
) -> list[Measurement]:
    """A warm-up per target, then ``rounds`` rounds measuring every pair a goal compares.

    The two sides of a pair are loaded at the same time, each on a server of
    its own (every spec runs twice: ``KEY`` and ``KEY+``), so their ratio is
    taken over the same seconds: the machine's speed changes far more over
    seconds (other tenants of the host) than the logging costs. The servers
    swap sides from round to round, and the pairs' order rotates. A target in
    no pair is loaded alone.
    """
    by_name = {target.name: target for target in targets}
    pairs = measured_pairs(set(by_name))
    alone = [name for name in by_name if not any(name in pair for pair in pairs)]
    if warmup > 0:
        for target in targets:
            for key in (target.server, f"{target.server}+"):
                await measure(wrk, [(servers[key], target)], "warmup", warmup)
    out = []
    for round_no in range(1, rounds + 1):
        shift = (round_no - 1) % max(len(pairs), 1)
        for reference, name in pairs[shift:] + pairs[:shift]:
            ref, tgt = by_name[reference], by_name[name]
            keys = (
                (ref.server, f"{tgt.server}+") if round_no % 2 else (f"{ref.server}+", tgt.server)
            )
            sides = [(servers[keys[0]], ref), (servers[keys[1]], tgt)]
            tag = f"r{round_no}{secrets.token_hex(3)}"
            for m in await measure(wrk, sides, tag, duration, round_no):
                m.pair = f"{name} vs {reference}"
                out.append(m)
                _say(say, m, by_name[m.target], round_no, rounds)
        for name in alone:
            target = by_name[name]
            tag = f"r{round_no}{secrets.token_hex(3)}"
            [m] = await measure(wrk, [(servers[target.server], target)], tag, duration, round_no)
            out.append(m)
            _say(say, m, target, round_no, rounds)
    return out


def _say(say: Callable[[str], None], m: Measurement, target: Target, n: int, rounds: int) -> None:
    say(
        f"  round {n}/{rounds} {target.name:<11} {m.rps:7.0f} req/s  "
        f"p99 {m.p99:6.1f} ms  server CPU {m.cpu_us_per_request:4.0f} us/req  "
        f"others {m.others:4.2f} cores" + (f"  logged {m.logged}" if target.login else "")
    )
