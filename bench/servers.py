"""The servers under test, started with the tests' launcher, and how busy the machine is."""

from __future__ import annotations

import io
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from quart_app.seal.sidecar import sidecar_path
from quart_app.seal.verify import verify
from quart_app.tools.loadtest import LogFile, LoginSource
from quart_app.tools.loadtest.sources import PostgresTable
from quart_app.tools.log.keygen import keygen
from quart_app.tools.log.verify import load_keys
from quart_app.tools.server import Server, run_server
from quart_app.tools.throwaway_postgres import Postgres

from .plan import ServerSpec


@dataclass
class Running:
    """A started :class:`ServerSpec`: its server, its log read as it grows, its database.

    ``database`` is the PostgreSQL server's postmaster when the spec logs
    into a table: its processes' CPU is the database's share of the work.
    """

    spec: ServerSpec
    server: Server
    log: LoginSource
    database: psutil.Process | None = None
    log_path: Path | None = None
    seal_key: Path | None = None  # a sealed log's first key (its .pub verifies it)

    def database_cpu_seconds(self) -> float:
        """CPU time the database's processes have used so far (0 without one)."""
        if self.database is None:
            return 0.0
        total = 0.0
        for process in [self.database, *self.database.children(recursive=True)]:
            with suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def settle(self, timeout: float = 60.0) -> float:
        """Wait until the server is idle again; return the seconds waited.

        A writer (or the background baseline) may still be working through a
        backlog when the load stops: measuring the next target then would
        charge it for this one's leftovers.
        """
        start = time.monotonic()
        window = 0.25
        while time.monotonic() - start < timeout:
            before = self.server.cpu_seconds()
            time.sleep(window)
            if self.server.cpu_seconds() - before < 0.03 * window:
                break
        return time.monotonic() - start

    def check_alive(self) -> None:
        """Raise with hypercorn's output if the server has exited."""
        if self.server.process.poll() is not None:
            raise RuntimeError(
                f"hypercorn for {self.spec.key} exited ({self.server.process.returncode}):\n"
                + self.server.stderr[-4000:]
            )


@contextmanager
def start_servers(
    specs: list[ServerSpec], workdir: Path, database: Postgres | None = None
) -> Iterator[dict[str, Running]]:
    """Start every server in ``specs`` twice (``KEY`` and ``KEY+``), each with its own log or
    table; stop them all at the end.
    """
    with ExitStack() as stack:
        running = {}
        for spec, key in [(spec, spec.key + twin) for spec in specs for twin in ("", "+")]:
            log_path = workdir / f"{key}.log"
            env = {"QUART_LOGIN_LOG_PATH": str(log_path), **spec.env}
            log: LoginSource = LogFile(log_path)
            postmaster = None
            seal_key = None
            if spec.sealed:
                # A key of its own in a directory of its own: it is replaced each epoch.
                seal_key = workdir / f"{key}.keys" / "key"
                seal_key.parent.mkdir()
                keygen(seal_key, None, io.StringIO())
                env["QUART_LOGIN_LOG_SEAL_KEY"] = str(seal_key)
            if spec.database:
                assert database is not None and database.pid is not None
                table = key.replace("-", "_").replace("+", "_b")
                env |= {
                    "QUART_LOGIN_LOG_DATABASE_URL": database.url,
                    "QUART_LOGIN_LOG_TABLE": table,
                }
                log, postmaster = PostgresTable(database.url, table), psutil.Process(database.pid)
                if spec.spool:
                    spool = workdir / f"{key}.spool"
                    spool.mkdir(mode=0o700)
                    env["QUART_LOGIN_LOG_SPOOL_DIR"] = str(spool)
            server = stack.enter_context(
                run_server(workdir, env, workers=spec.workers, app=spec.app, startup_timeout=30)
            )
            if spec.workers is None:
                _share_the_first_core(server)
            running[key] = Running(spec, server, log, postmaster, log_path, seal_key)
            # A graceful stop first, which drains the writer as in production.
            stack.callback(server.stop)
        yield running


def check_seals(servers: dict[str, Running]) -> list[str]:
    """Once the servers have stopped: whether each sealed log verifies (``quart-app-log
    verify``'s check, with the server's first key), one line each."""
    out = []
    for key, running in servers.items():
        if running.seal_key is None or running.log_path is None or running.spec.database:
            continue  # a sealed table: bench.verify_table checks one
        log = str(running.log_path)
        report = verify([log], sidecar_path(log), load_keys([f"{running.seal_key}.pub"]))
        lines = sum(count for _, count in report.files)
        if report.ok:
            out.append(f"sealed log of {key}: {lines:,} lines verified")
        else:
            failures = [t.failure for t in report.trees if t.failure] + report.failures
            out.append(f"sealed log of {key}: NOT VERIFIED ({lines:,} lines): {failures}")
    return out


def check_spools(servers: dict[str, Running]) -> list[str]:
    """While the servers run: each spooled server's spool, from ``/healthz``, one line each.

    With the database up the whole run, a spooled server must have written
    straight to the table: nothing spooled, nothing forwarded. Raises if not:
    its figures would be the spool's, not the direct path's.
    """
    out = []
    for key, running in servers.items():
        if not running.spec.spool:
            continue
        with urllib.request.urlopen(running.server.url + "/healthz", timeout=10) as response:
            spool = json.load(response)["spool"]
        line = (
            f"spool of {key}: {spool['database']}, {spool['records']} records waiting, "
            f"{spool['forwarded']} forwarded"
        )
        if spool["database"] != "direct" or spool["records"] or spool["forwarded"]:
            raise RuntimeError(
                f"{line}: the spool was used, so the run did not measure the "
                "direct path; see hypercorn's log in the run's directory"
            )
        out.append(line)
    return out


def _share_the_first_core(server: Server) -> None:
    # The two sides of a pair then run at once on one core, taking turns: the
    # ratio of their CPU per request does not depend on the core's speed,
    # which on a shared host differs from core to core and from second to
    # second. wrk runs on the other core (load.py).
    # Every thread: an affinity set on a process binds its main thread only.
    if (os.cpu_count() or 1) > 1:
        for process in server.processes():
            with suppress(psutil.NoSuchProcess):
                for thread in process.threads():
                    with suppress(OSError):
                        os.sched_setaffinity(thread.id, {0})


def busy_seconds() -> float:
    """CPU seconds all cores have spent busy so far."""
    times = psutil.cpu_times()
    # guest time is counted in user time already.
    every = sum(times) - getattr(times, "guest", 0) - getattr(times, "guest_nice", 0)
    return every - times.idle - getattr(times, "iowait", 0)


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
