"""Sealed tables in tests: a host key, a real hypercorn writing the sealed table, and verify."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quart_app.stores.pg_table import quoted
from quart_app.tools.loadtest import Summary

from .pg import Database, connected
from .server import run_server, send_logins
from .trail import Ran, run_log


def host_key(directory: Path, name: str = "host-a/login-log") -> tuple[Path, Path]:
    """A new host key made by ``quart-app-log keygen``, and its public half."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "seal.key"
    ran = run_log("keygen", key, "--name", name)
    assert ran.status == 0, ran
    return key, Path(f"{key}.pub")


def sealed_env(database: Database, key: Path, **extra: str) -> dict[str, str]:
    """The server's settings: the test's table, sealed with ``key``, durable mode."""
    return database.env(**{"LOGIN_LOG_SEAL_KEY": str(key), "LOGIN_LOG_DURABLE": "true", **extra})


@dataclass
class SealedRun:
    """A sealed table written by real servers: its database, keys, runs and stderr copies."""

    database: Database
    publics: list[Path]
    directory: Path
    runs: list[Summary] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def copies(self) -> Path:
        """The servers' stderr, as ``--checkpoint`` reads it."""
        path = self.directory / "copies.txt"
        path.write_text("".join(self.stderr))
        return path

    def verify(self, *extra: str | Path) -> Ran:
        """``quart-app-log verify --key PUBLIC... URL --table TABLE``."""
        keys: list[str | Path] = []
        for public in self.publics:
            keys += ["--key", public]
        return run_log("verify", *keys, self.database.url, "--table", self.database.table, *extra)

    async def row(self, number: int) -> Any:
        """The ``number``-th row by stream and position."""
        async with connected(self.database.url) as connection:
            return await connection.fetchrow(
                f"SELECT * FROM {quoted(self.database.table)} "
                "ORDER BY stream, position OFFSET $1 LIMIT 1",
                number,
            )


async def sealed_run(
    directory: Path,
    database: Database,
    *,
    logins: int,
    workers: int = 2,
    rounds: int = 1,
    **env: str,
) -> SealedRun:
    """``logins`` logins through a sealed server with ``workers`` processes, stopped cleanly;
    in ``rounds`` a second apart (each then has checkpoints of its own)."""
    key, public = host_key(directory / "keys")
    run = SealedRun(database, [public], directory)
    each = logins // rounds
    with run_server(directory, sealed_env(database, key, **env), workers=workers) as server:
        for number in range(rounds):
            if number:
                await asyncio.sleep(1.0)
            names = [f"sealed-{number}-{login}" for login in range(each)]
            run.runs.append(await send_logins(server.url, names))
        assert server.stop() == 0, server.stderr
        run.stderr.append(server.stderr)
    for summary in run.runs:
        assert summary.statuses == {200: each}, summary.statuses
    return run
