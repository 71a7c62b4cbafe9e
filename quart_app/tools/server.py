"""The real server for tests, the benchmark and demos: hypercorn with ``hypercorn.toml``.

Runs from a source checkout (it needs the repository's ``hypercorn.toml``) with
the ``test`` extra installed (psutil).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
ENTRY = "quart_app.asgi:app"
CONFIG = ROOT / "hypercorn.toml"


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
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
        """What hypercorn and the app wrote to stdout and stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def processes(self) -> list[psutil.Process]:
        """hypercorn's own process and all its descendants."""
        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]

    def workers(self) -> list[psutil.Process]:
        """hypercorn's worker processes (none in single-process mode)."""
        return [
            child
            for child in psutil.Process(self.process.pid).children()
            if "spawn_main" in " ".join(child.cmdline())
        ]

    def cpu_seconds(self) -> float:
        """User and system CPU time the server's processes have used so far."""
        total = 0.0
        for process in self.processes():
            with suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total


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
    raise TimeoutError(f"hypercorn did not listen on {host}:{port} within {timeout} s")


def _config_with(workdir: Path, port: int, settings: Mapping[str, object]) -> Path:
    # JSON's strings, numbers, booleans and arrays are TOML's too.
    merged = {**tomllib.loads(CONFIG.read_text()), **settings}
    path = workdir / f"hypercorn-{port}.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in merged.items()))
    return path


@contextmanager
def run_server(
    workdir: Path,
    env: Mapping[str, str] | None = None,
    *,
    workers: int | None = None,
    host: str = "127.0.0.1",
    app: str = ENTRY,
    startup_timeout: float = 20,
    wait: bool = True,
    cwd: Path = ROOT,
    hypercorn_settings: Mapping[str, object] | None = None,
    config: Path | None = None,
) -> Iterator[Server]:
    """Start ``hypercorn --config hypercorn.toml APP`` on a free port of ``host``.

    The server sees the ``QUART_*`` settings in ``env`` and no others (the
    caller's shell must not change what is tested or measured). ``workers``
    overrides the file's ``workers``. hypercorn's output goes to a file in
    ``workdir``; it runs in ``cwd`` (the repository, as ``make run`` does).
    With ``wait`` it returns once the server listens (or has exited), else at
    once. ``hypercorn_settings`` replace or add keys of the file (in a copy
    written to ``workdir``), for those hypercorn has no option for, such as
    ``keep_alive_max_requests``; ``config`` replaces the file itself. Every
    process of the server is killed at the end if still running; callers that care how it stops call
    :meth:`Server.stop` first.
    """
    port = free_port(host)
    stderr_path = workdir / f"hypercorn-{host}-{port}.log"
    if config is None:
        config = _config_with(workdir, port, hypercorn_settings) if hypercorn_settings else CONFIG
    command = [sys.executable, "-m", "hypercorn", "--config", str(config)]
    command += ["-b", f"{host}:{port}", app]
    if workers is not None:
        command += ["-w", str(workers)]
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("QUART_")}
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**inherited, **(env or {})},
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,  # its own process group, so workers can be signalled too
        )
    try:
        if wait:
            _wait_until_listening(process, host, port, startup_timeout)
        yield Server(process, f"http://{host}:{port}", stderr_path)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # workers too: none may outlive their user
        process.wait()
