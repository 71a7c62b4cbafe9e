"""A server that lies: it answers every login 200 and logs it twice, the second time later.

What ``quart-app-loadtest --verify`` must catch (issue 15): every
acknowledged login is in the log at once, and its second line comes only
while the tool reads on (``--verify-settle``). With ``again_after=None`` it
is an honest server, logging each login once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiohttp import web

from quart_app.records import LoginRecord, format_text
from quart_app.stores.pg_table import quoted

Log = Callable[[str], Awaitable[None]]
"""Logs one login of the given username."""


def to_file(path: Path) -> Log:
    """Log a login as quart_app's text line, appended to ``path``."""

    async def log(username: str) -> None:
        with path.open("ab") as file:
            file.write(format_text(LoginRecord(username, datetime.now(UTC), "127.0.0.1")))

    return log


def to_table(pool: asyncpg.Pool, table: str) -> Log:
    """Log a login as a row of quart_app's table, each with an id of its own."""

    async def log(username: str) -> None:
        await pool.execute(
            f"INSERT INTO {quoted(table)} (id, username, logged_in_at, ip, host) "
            "VALUES (gen_random_uuid(), $1, now(), NULL, 'liar')",
            username,
        )

    return log


@asynccontextmanager
async def lying_server(log: Log, again_after: float | None) -> AsyncIterator[str]:
    """Serve ``GET /login/?username=NAME`` on loopback; yield its base URL.

    Each login is logged, then answered 200 ``登录成功``, and logged once more
    ``again_after`` seconds later (never, if None). Logins still due a second
    line at the end get none.
    """
    later: set[asyncio.Task[None]] = set()

    async def again(username: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await log(username)

    async def login(request: web.Request) -> web.Response:
        username = request.query["username"]
        await log(username)
        if again_after is not None:
            task = asyncio.create_task(again(username, again_after))
            later.add(task)
            task.add_done_callback(later.discard)
        return web.Response(text="登录成功")

    app = web.Application()
    app.router.add_get("/login/", login)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        for task in list(later):
            task.cancel()
        await asyncio.gather(*later, return_exceptions=True)
        await runner.cleanup()
