"""Running the real thing: hypercorn with the project's hypercorn.toml, as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from quart_app.loadtest import LoadConfig, Logins, Summary, run_load, verify_log
from quart_app.loadtest.config import Method

ROOT = Path(__file__).resolve().parent.parent
ENTRY = "quart_app.asgi:app"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running hypercorn; ``url`` is its base URL."""

    process: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` to hypercorn and return the exit status once it has exited."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to hypercorn and its workers at once, as systemd or a terminal would."""
        os.killpg(self.process.pid, sig)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def workers(self) -> list[psutil.Process]:
        """hypercorn's worker processes (none in single-process mode)."""
        return [
            child
            for child in psutil.Process(self.process.pid).children()
            if "spawn_main" in " ".join(child.cmdline())
        ]


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"hypercorn did not listen on port {port} within {timeout} s")


@contextmanager
def run_server(
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    workers: int | None = None,
    startup_timeout: float = 20,
) -> Iterator[Server]:
    """Start ``hypercorn --config hypercorn.toml ENTRY`` on a free port.

    ``env`` adds ``QUART_*`` settings; ``workers`` overrides the file's ``workers``.
    The server is killed if still running at the end; tests that care how it
    stops call :meth:`Server.stop` themselves.
    """
    port = free_port()
    stderr_path = tmp_path / f"hypercorn-{port}.log"
    command = [sys.executable, "-m", "hypercorn", "--config", "hypercorn.toml"]
    command += ["-b", f"127.0.0.1:{port}", ENTRY]
    if workers is not None:  # else hypercorn.toml's: one process
        command += ["-w", str(workers)]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,  # its own process group, so workers can be signalled too
        )
    try:
        _wait_until_listening(process, port, startup_timeout)
        yield Server(process, f"http://127.0.0.1:{port}", stderr_path)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # workers too: none may outlive the test
        process.wait()


async def send_logins(
    url: str,
    names: Sequence[str],
    *,
    concurrency: int = 200,
    method: Method = "post",
    when_half_done: Callable[[], object] | None = None,
) -> Summary:
    """One login per name, through the load-test tool; ``when_half_done`` runs once, mid-way.

    POST by default, though the tool never resends a GET either.
    """
    config = LoadConfig(url, names=names, concurrency=concurrency, method=method, timeout=60)
    progress = None
    if when_half_done is not None:
        half, done_already = len(names) // 2, False

        def progress(done: int, elapsed: float) -> None:
            nonlocal done_already
            if done >= half and not done_already:
                done_already = True
                when_half_done()

    return await run_load(config, progress=progress, progress_interval=0.005)


async def assert_logged_once(log_path: Path, *runs: Summary) -> int:
    """Every login the runs got 200 for is in the log exactly once, and no other line is.

    Returns how many were acknowledged.
    """
    sent: dict[str, int] = {}
    acknowledged: set[str] = set()
    for run in runs:
        sent.update(run.sent)
        acknowledged.update(run.acknowledged)
    result = await verify_log(log_path, Logins(sent, acknowledged, run_prefix=""), max_wait=0)
    assert result.ok, result.to_dict()
    return result.acknowledged
