"""Instructions per request under callgrind: a count a busy machine does not change.

``python -m bench.instructions [--requests N] [--rate R] [--targets ...]`` (needs
valgrind: ``apt-get install valgrind``).

For ``/?username=…``, ``/login/?username=…`` and the same login route with a
sealed log (issue 18: ``LOGIN_LOG_SEAL_KEY``, a fresh key from ``quart-app-log
keygen`` in the run's temporary directory, checkpoints every second),
hypercorn serves the app as ``make run`` does, under callgrind, loaded by
``quart-app-loadtest`` with N and then 2N requests; the difference of the two
totals over N is what one request costs, start-up and shutdown cancelling out.
The requests arrive at a constant R per second, so every batch holds about
R/20 records (R times the 50 ms linger) whatever the speed of the code
measured: a login's share of a batch's cost depends on the batch's size, and
a closed loop would make it depend on how fast the server runs. Slow
(callgrind runs Python some 50 times slower), but it repeats to a fraction of
a percent where timings on a shared machine vary by tens of percent. A sealed
run's log must pass ``quart-app-log verify`` after it; what the server wrote
to stderr besides its checkpoints is printed.

``--targets pg "pg spool"`` (issue 19) measures the login route with the
PostgreSQL store, in a throwaway PostgreSQL (the ``test`` extra), without and
with a spool (``LOGIN_LOG_SPOOL_DIR``) while the database is up: the spool
must have stayed unused, or the run fails. Only the server runs under
callgrind, not the database.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from quart_app.tools.server import ENTRY, ROOT, free_port
from quart_app.tools.throwaway_postgres import throwaway_postgres

# name: (path, store, label). store: "file" (the log file), "sealed" (sealed),
# "pg" (the PostgreSQL table), "pg-spool" (the table inside a spool, the database up),
# "pg-sealed" (the table, sealed).
TARGETS = {
    "/": ("/", "file", "`/?username=…`"),
    "/login/": ("/login/", "file", "`/login/?username=…`"),
    "sealed": ("/login/", "sealed", "sealed `/login/?username=…`"),
    "pg": ("/login/", "pg", "PostgreSQL `/login/?username=…`"),
    "pg spool": ("/login/", "pg-spool", "spooled PostgreSQL `/login/?username=…`"),
    "pg sealed": ("/login/", "pg-sealed", "sealed PostgreSQL `/login/?username=…`"),
}
DEFAULT_TARGETS = ["/", "/login/", "sealed"]
"""Measured without ``--targets``: the PostgreSQL ones need the ``test`` extra's server."""
RATIOS = [
    ("/login/", "/", "/login/ over /"),
    ("sealed", "/login/", "sealed /login/ over /login/"),
    ("pg spool", "pg", "spooled PostgreSQL /login/ over PostgreSQL /login/"),
    ("pg sealed", "pg", "sealed PostgreSQL /login/ over PostgreSQL /login/"),
]

BIN = Path(sys.executable).parent


def instructions(
    path: str,
    requests: int,
    rate: float,
    workdir: Path,
    *,
    store: str = "file",
    database_url: str = "",
) -> tuple[int, float]:
    """Instructions the server ran to start, answer ``requests`` requests of ``path`` and stop,
    and the mean records per batch it wrote. ``store`` (see :data:`TARGETS`): ``sealed``, a
    sealed log with a new key each run; ``pg``, a new table of the database at
    ``database_url``; ``pg-spool``, the same inside a new spool directory, which must stay
    unused (the database is up).
    """
    sealed = store == "sealed"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = workdir / f"callgrind-{port}.%p"
    log = workdir / f"log-{port}.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_")}
    env["QUART_LOGIN_LOG_PATH"] = str(log)
    env["PYTHONHASHSEED"] = "0"  # the same dict and set layouts in every run
    key = workdir / f"key-{port}" / "key"  # in a directory of its own: replaced each epoch
    if sealed or store == "pg-sealed":
        key.parent.mkdir()
        keygen = [str(BIN / "quart-app-log"), "keygen", str(key)]
        subprocess.run(keygen, check=True, stdout=subprocess.DEVNULL)
        env["QUART_LOGIN_LOG_SEAL_KEY"] = str(key)
    if store in ("pg", "pg-spool", "pg-sealed"):
        env["QUART_LOGIN_LOG_DATABASE_URL"] = database_url
        env["QUART_LOGIN_LOG_TABLE"] = f"login_log_{port}"
    if store == "pg-spool":
        spool = workdir / f"spool-{port}"
        spool.mkdir(mode=0o700)
        env["QUART_LOGIN_LOG_SPOOL_DIR"] = str(spool)
    stderr_path = workdir / f"stderr-{port}.txt"
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        sys.executable, "-m", "hypercorn", "--config", str(ROOT / "hypercorn.toml"),
        "-b", f"127.0.0.1:{port}", ENTRY,
    ]  # fmt: skip
    with stderr_path.open("wb") as stderr:
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        _wait_until_serving(url, server)
        load = [
            str(BIN / "quart-app-loadtest"), url,
            "-n", str(requests), "-c", "64", "--rate", str(rate), "--run-id", "bench",
            "--path", path, "-q", "--timeout", "300",
        ]  # fmt: skip
        subprocess.run(load, check=True, stdout=subprocess.DEVNULL)
        batch = _records_per_batch(url)
        if store == "pg-spool":
            _check_spool_unused(url)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=600)
        _show_stderr(stderr_path, sealed)
    if sealed:
        _verify(log, key)
    total = 0
    for dump in workdir.glob(f"callgrind-{port}.*"):
        for line in dump.read_text().splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total, batch


def _show_stderr(path: Path, sealed: bool) -> None:
    # Valgrind's own lines, hypercorn's INFO lines and the checkpoints' copies are
    # expected; anything else (an error, a traceback) is worth seeing.
    unexpected = [
        line
        for line in path.read_text(errors="replace").splitlines()
        if line.strip()
        and not line.startswith(("==", "login-log-checkpoint "))
        and "] [INFO] " not in line
    ]
    for line in unexpected[:40]:
        print(f"  server stderr: {line[:300]}", file=sys.stderr)


def _verify(log: Path, key: Path) -> None:
    # The sealed run must have left a log that verifies.
    check = [str(BIN / "quart-app-log"), "verify", "--key", f"{key}.pub", str(log)]
    result = subprocess.run(check, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"quart-app-log verify {log} failed:\n{result.stdout}{result.stderr}")


def _records_per_batch(url: str) -> float:
    # Printed beside the figures: a login's share of a batch's cost shrinks as
    # batches grow, and a real server at full speed writes far larger ones.
    with urllib.request.urlopen(url + "/metrics", timeout=60) as response:
        figures = {
            name.partition("{")[0]: value  # without the app label
            for name, value in (
                line.rsplit(" ", 1)
                for line in response.read().decode().splitlines()
                if line.startswith("quart_app_login_batch_records_")
            )
        }
    count = float(figures.get("quart_app_login_batch_records_count", 0))
    return float(figures.get("quart_app_login_batch_records_sum", 0)) / count if count else 0.0


def _check_spool_unused(url: str) -> None:
    # The database was up the whole run: every batch must have gone straight to the table,
    # or the count is the spool's and not the direct path's.
    with urllib.request.urlopen(url + "/healthz", timeout=60) as response:
        spool = json.load(response)["spool"]
    if spool["database"] != "direct" or spool["records"] or spool["forwarded"]:
        raise RuntimeError(f"the spool was used during the run: {spool}")


def _wait_until_serving(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300  # callgrind makes the start slow
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"hypercorn under callgrind exited ({server.returncode})")
        try:
            with urllib.request.urlopen(url + "/", timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise RuntimeError("hypercorn under callgrind did not start within 300 s")


def main(argv: list[str] | None = None) -> int:
    """Print the instructions per request of each target and the ratios."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=2000, help="N (default 2000)")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="R requests per second (default 100)"
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=list(TARGETS),
        default=DEFAULT_TARGETS,
        help="which to measure (default: / /login/ sealed; 'pg' and 'pg spool' start a "
        "throwaway PostgreSQL)",
    )
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if not 0 < args.rate <= 1000:
        parser.error("--rate must be above 0 and at most 1000 (callgrind serves a few hundred)")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    per_request = {}
    with tempfile.TemporaryDirectory(prefix="quart-callgrind-") as tmp, ExitStack() as stack:
        database_url = ""
        if any(TARGETS[name][1].startswith("pg") for name in args.targets):
            database = stack.enter_context(throwaway_postgres(Path(tmp) / "postgres"))
            database_url = database.url
        for name in [name for name in TARGETS if name in args.targets]:
            path, store, label = TARGETS[name]
            where = {"store": store, "database_url": database_url}
            once, _ = instructions(path, args.requests, args.rate, Path(tmp), **where)
            twice, batch = instructions(path, 2 * args.requests, args.rate, Path(tmp), **where)
            per_request[name] = (twice - once) / args.requests
            batches = f" ({batch:.0f} records per batch)" if batch else ""
            print(
                f"{label}: {per_request[name]:,.0f} instructions per request{batches}", flush=True
            )
    for top, bottom, text in RATIOS:
        if top in per_request and bottom in per_request:
            print(f"{text}: {per_request[top] / per_request[bottom]:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
