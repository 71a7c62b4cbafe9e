"""Instructions per request under callgrind: a count a busy machine does not change.

``python -m bench.instructions [--requests N] [--rate R]`` (needs valgrind:
``apt-get install valgrind``).

For ``/?username=…`` and ``/login/?username=…``, hypercorn serves the app as
``make run`` does, under callgrind, loaded by ``quart-app-loadtest`` with N and
then 2N requests; the difference of the two totals over N is what one request
costs, start-up and shutdown cancelling out. The requests arrive at a constant
R per second, so every batch holds about R/20 records (R times the 50 ms
linger) whatever the speed of the code measured: a login's share of a batch's
cost depends on the batch's size, and a closed loop would make it depend on how
fast the server runs. Slow (callgrind runs Python some 50 times slower), but it
repeats to a fraction of a percent where timings on a shared machine vary by
tens of percent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from quart_app.tools.server import ENTRY, ROOT, free_port

PATHS = {"/": "`/?username=…`", "/login/": "`/login/?username=…`"}


def instructions(path: str, requests: int, rate: float, workdir: Path) -> tuple[int, float]:
    """Instructions the server ran to start, answer ``requests`` requests of ``path`` and stop,
    and the mean records per batch it wrote.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = workdir / f"callgrind-{port}.%p"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_")}
    env["QUART_LOGIN_LOG_PATH"] = str(workdir / f"log-{port}.txt")
    env["PYTHONHASHSEED"] = "0"  # the same dict and set layouts in every run
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        sys.executable, "-m", "hypercorn", "--config", str(ROOT / "hypercorn.toml"),
        "-b", f"127.0.0.1:{port}", ENTRY,
    ]  # fmt: skip
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_serving(url, server)
        load = [
            str(Path(sys.executable).with_name("quart-app-loadtest")), url,
            "-n", str(requests), "-c", "64", "--rate", str(rate), "--run-id", "bench",
            "--path", path, "-q", "--timeout", "300",
        ]  # fmt: skip
        subprocess.run(load, check=True, stdout=subprocess.DEVNULL)
        batch = _records_per_batch(url)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=600)
    total = 0
    for dump in workdir.glob(f"callgrind-{port}.*"):
        for line in dump.read_text().splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total, batch


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
    """Print the instructions per request of each path and the login route's ratio."""
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="N (default 2000)")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="R requests per second (default 100)"
    )
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if not 0 < args.rate <= 1000:
        parser.error("--rate must be above 0 and at most 1000 (callgrind serves a few hundred)")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    per_request = {}
    with tempfile.TemporaryDirectory(prefix="quart-callgrind-") as tmp:
        for path in PATHS:
            once, _ = instructions(path, args.requests, args.rate, Path(tmp))
            twice, batch = instructions(path, 2 * args.requests, args.rate, Path(tmp))
            per_request[path] = (twice - once) / args.requests
            batches = f" ({batch:.0f} records per batch)" if batch else ""
            print(f"{PATHS[path]}: {per_request[path]:,.0f} instructions per request{batches}")
    print(f"/login/ over /: {per_request['/login/'] / per_request['/']:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
