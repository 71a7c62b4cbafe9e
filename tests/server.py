"""Running the real thing: hypercorn with the project's hypercorn.toml, as a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from conftest import read_records

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


def _wait_until_listening(
    process: subprocess.Popen[bytes], host: str, port: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return
        try:
            with socket.create_connection((host, port), timeout=0.2):
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
    host: str = "127.0.0.1",
    startup_timeout: float = 20,
) -> Iterator[Server]:
    """Start ``hypercorn --config hypercorn.toml ENTRY`` on a free port of ``host``.

    ``env`` adds ``QUART_*`` settings; ``workers`` overrides the file's ``workers``;
    ``host`` is any loopback address (127.0.0.2, ...), to run several hosts.
    The server is killed if still running at the end; tests that care how it
    stops call :meth:`Server.stop` themselves.
    """
    port = free_port()
    stderr_path = tmp_path / f"hypercorn-{port}.log"
    command = [sys.executable, "-m", "hypercorn", "--config", "hypercorn.toml"]
    command += ["-b", f"{host}:{port}", ENTRY]
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
        _wait_until_listening(process, host, port, startup_timeout)
        yield Server(process, f"http://{host}:{port}", stderr_path)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # workers too: none may outlive the test
        process.wait()


async def fire_logins(
    url: str,
    names: list[str],
    results: dict[str, int | None],
    *,
    concurrency: int = 200,
    method: str = "POST",
) -> None:
    """Send one login per name, filling ``results`` with each status (None: transport error).

    POST by default: aiohttp silently resends a GET whose keep-alive connection
    the server closed while stopping, and a server that had taken the first one
    rightly logs that login twice. A POST is never resent.
    """
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(name: str) -> None:
            try:
                if method == "GET":
                    request = session.get(f"{url}/login/", params={"username": name})
                else:
                    request = session.post(f"{url}/login/", data={"username": name})
                async with request as response:
                    body = await response.text()
                    results[name] = response.status
                    if response.status == 200:
                        assert body == "登录成功"
            except (TimeoutError, aiohttp.ClientError):
                results[name] = None

        await asyncio.gather(*(one(n) for n in names))


def assert_acknowledged_exactly_once(log_path: Path, results: dict[str, int | None]) -> int:
    """Every login answered 200 is in the file exactly once; return how many there were."""
    counts: dict[str, int] = {}
    for record in read_records(log_path):
        counts[record.username] = counts.get(record.username, 0) + 1
    acknowledged = [name for name, status in results.items() if status == 200]
    missing = [n for n in acknowledged if counts.get(n, 0) == 0]
    doubled = [n for n, c in counts.items() if c > 1]
    assert not missing, f"{len(missing)} acknowledged logins missing, e.g. {missing[:3]}"
    assert not doubled, f"{len(doubled)} logins written twice, e.g. {doubled[:3]}"
    assert set(counts) <= set(results), "a line for a login nobody sent"
    return len(acknowledged)
