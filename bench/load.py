"""HTTP load with wrk, one measurement at a time, targets interleaved round by round."""

from __future__ import annotations

import json
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

    def run(self, url: str, mode: str, tag: str, duration: float) -> dict:
        """Load ``url`` for ``duration`` seconds in login.lua's ``mode``; wrk's summary."""
        command = [
            self.binary, f"-t{self.threads}", f"-c{self.concurrency}",
            f"-d{max(1, round(duration))}s", "--timeout", "10s",
            "-s", str(LUA_SCRIPT), url, "--", mode, tag,
        ]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        for line in out.stdout.splitlines():
            if line.startswith("WRK_JSON "):
                return json.loads(line.removeprefix("WRK_JSON "))
        raise RuntimeError(f"wrk gave no summary:\n{out.stdout}\n{out.stderr}")


@dataclass
class Measurement:
    """One target measured once.

    ``answered``: 2xx answers wrk counted; ``logged``: the log's new lines (or
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def measure(
    wrk: Wrk, running: Running, target: Target, tag: str, duration: float, round_no: int = 0
) -> Measurement:
    """Load ``target`` once, check its log, and wait for the server to be idle again."""
    probe = cpu_probe()
    running.check_alive()
    await running.log.read()  # from here on
    cpu_before, db_before, busy_before, wrk_before = (
        running.server.cpu_seconds(),
        running.database_cpu_seconds(),
        busy_seconds(),
        _children_cpu(),
    )
    wall = time.monotonic()
    data = wrk.run(running.server.url, target.mode, tag, duration)
    wall = time.monotonic() - wall
    cpu = running.server.cpu_seconds() - cpu_before
    db_cpu = running.database_cpu_seconds() - db_before
    others = busy_seconds() - busy_before - cpu - db_cpu - (_children_cpu() - wrk_before)
    settle = running.settle()
    running.check_alive()
    usernames = (await running.log.read()).usernames
    errors = data["errors"]
    answered = data["requests"] - errors["status"]
    if target.login and len(set(usernames)) < answered:
        raise RuntimeError(
            f"{target.name}: {answered} logins answered but only {len(set(usernames))} logged"
        )
    latency = data["latency_ms"]
    return Measurement(
        target=target.name,
        round=round_no,
        rps=data["rps"],
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

    The two sides of a pair are measured back to back, so their ratio is
    taken seconds apart: the machine's speed changes over tens of seconds
    (other tenants of the host) far more than the logging costs. Within a
    pair the order alternates from round to round, and the pairs' order
    rotates. A target in no pair is measured once a round.
    """
    by_name = {target.name: target for target in targets}
    pairs = measured_pairs(set(by_name))
    alone = [name for name in by_name if not any(name in pair for pair in pairs)]
    if warmup > 0:
        for target in targets:
            await measure(wrk, servers[target.server], target, "warmup", warmup)
    out = []
    for round_no in range(1, rounds + 1):
        shift = (round_no - 1) % max(len(pairs), 1)
        for reference, name in pairs[shift:] + pairs[:shift]:
            order = (reference, name) if round_no % 2 else (name, reference)
            for side in order:
                m = await _measured(wrk, servers, by_name[side], duration, round_no, rounds, say)
                m.pair = f"{name} vs {reference}"
                out.append(m)
        for name in alone:
            out.append(
                await _measured(wrk, servers, by_name[name], duration, round_no, rounds, say)
            )
    return out


async def _measured(
    wrk: Wrk,
    servers: dict[str, Running],
    target: Target,
    duration: float,
    round_no: int,
    rounds: int,
    say: Callable[[str], None],
) -> Measurement:
    tag = f"r{round_no}{target.server}{secrets.token_hex(3)}"
    m = await measure(wrk, servers[target.server], target, tag, duration, round_no)
    say(
        f"  round {round_no}/{rounds} {target.name:<11} {m.rps:7.0f} req/s  "
        f"p99 {m.p99:6.1f} ms  server CPU {m.cpu_us_per_request:4.0f} us/req  "
        f"others {m.others:4.2f} cores" + (f"  logged {m.logged}" if target.login else "")
    )
    return m
