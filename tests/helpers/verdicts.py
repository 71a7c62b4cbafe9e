"""Every acknowledged login recorded exactly once: the load tool's own verdict, file or table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from quart_app.tools.loadtest import Logins, Summary, verify_log
from quart_app.tools.loadtest.sources import LoginSource, PostgresTable

from helpers.pg import Database


async def assert_recorded_once(source: Path | Database, *runs: Summary) -> int:
    """Every login the runs got 200 for is recorded exactly once, and nothing else is.

    ``source``: the log file's path, or the test's :class:`~helpers.pg.Database`
    (its table). Logins answered 503, or not at all, may or may not be
    recorded, never twice; a record of a login no run sent, or one that is no
    login record (a torn or interleaved line), fails. The verdict is
    ``quart-app-loadtest --verify``'s (:func:`~quart_app.tools.loadtest.verify_log`).

    Call it once every process of the server has exited: the log is read
    once, as nothing more can be written to it. Returns how many were
    acknowledged.
    """
    sent: Counter[str] = Counter()
    acknowledged: set[str] = set()
    for run in runs:
        sent.update(run.sent)
        acknowledged.update(run.acknowledged)
    where: Path | LoginSource = source
    if isinstance(source, Database):
        where = PostgresTable(source.url, source.table)
    logins = Logins(sent, acknowledged, run_prefix="")
    result = await verify_log(where, logins, max_wait=0, settle=0)
    assert result.ok, result.to_dict()
    return result.acknowledged
