"""Faults at run time: disk errors, rotation, and what /healthz says about them."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from pathlib import Path

import pytest

from conftest import FailingStore, read_records, wait_for_records

DISK_ERRORS = [errno.ENOSPC, errno.EACCES, errno.EIO]


def failing_app(make_app, **config):
    stores: list[FailingStore] = []

    def factory(settings):
        stores.append(FailingStore(settings.log_path))
        return stores[-1]

    return make_app(store=factory, **config), stores


@pytest.mark.parametrize("code", DISK_ERRORS, ids=[errno.errorcode[c] for c in DISK_ERRORS])
async def test_disk_errors_keep_records_and_write_them_once_the_disk_works(
    make_app, log_path: Path, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    app, [store] = failing_app(make_app)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/login/?username=before")).status_code == 200
        await wait_for_records(log_path, 1)

        store.error = OSError(code, os.strerror(code))
        names = [f"during-{i}" for i in range(20)]
        for name in names:
            assert (await client.get(f"/login/?username={name}")).status_code == 200
        while store.failures < 3:  # several retries, with backoff
            await asyncio.sleep(0.01)

        health = await client.get("/healthz")
        body = await health.get_json()
        assert health.status_code == 503
        assert body["status"] == "degraded"
        assert body["pending"] == 20
        assert body["write_errors"] >= 3
        assert os.strerror(code) in body["last_error"]
        assert body["last_error_at"] is not None
        assert (await client.get("/")).status_code == 200

        store.error = None
        records = await wait_for_records(log_path, 21)
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert (await health.get_json())["status"] == "ok"
    assert [r.username for r in records] == ["before", *names]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1, "one error per streak, not one per retry"
    assert os.strerror(code) in failures[0].getMessage()
    assert any("works again" in r.getMessage() for r in caplog.records)


async def test_queue_bound_holds_while_the_disk_fails(make_app, log_path: Path) -> None:
    app, [store] = failing_app(make_app, LOGIN_LOG_MAX_PENDING=5, LOGIN_LOG_FULL_TIMEOUT=0.1)
    store.error = OSError(errno.ENOSPC, "No space left on device")
    async with app.test_app() as test_app:
        client = test_app.test_client()
        statuses = [(await client.get(f"/login/?username=q{i}")).status_code for i in range(8)]
        assert statuses == [200] * 5 + [503] * 3
        store.error = None
        await wait_for_records(log_path, 5)
    assert [r.username for r in read_records(log_path)] == [f"q{i}" for i in range(5)]


async def test_durable_logins_get_503_while_the_disk_fails_and_are_not_written(
    make_app, log_path: Path
) -> None:
    app, [store] = failing_app(make_app, LOGIN_LOG_DURABLE=True, LOGIN_LOG_FULL_TIMEOUT=0.2)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        store.error = OSError(errno.EIO, "Input/output error")
        refused = await asyncio.gather(*(client.get(f"/login/?username=x{i}") for i in range(5)))
        assert {r.status_code for r in refused} == {503}
        assert "could not be written in time" in await refused[0].get_data(as_text=True)
        store.error = None
        assert (await client.get("/login/?username=ok")).status_code == 200
        assert (await (await client.get("/healthz")).get_json())["pending"] == 0
    # Not acknowledged, so not written: the file holds only the login that got 200.
    assert [r.username for r in read_records(log_path)] == ["ok"]


@pytest.mark.parametrize("how", ["rename", "remove"])
async def test_rotation_reopens_the_path(client, log_path: Path, how: str) -> None:
    assert (await client.get("/login/?username=old")).status_code == 200
    await wait_for_records(log_path, 1)
    rotated = log_path.with_suffix(".txt.1")
    if how == "rename":
        log_path.rename(rotated)
    else:
        log_path.unlink()
    assert (await client.get("/login/?username=new")).status_code == 200
    assert [r.username for r in await wait_for_records(log_path, 1)] == ["new"]
    if how == "rename":
        assert [r.username for r in read_records(rotated)] == ["old"]


async def test_stop_drains_everything_accepted(app, log_path: Path) -> None:
    names = [f"drain-{i}" for i in range(500)]
    async with app.test_app() as test_app:
        client = test_app.test_client()
        await asyncio.gather(*(client.get(f"/login/?username={n}") for n in names))
    # No waiting: leaving test_app() ran the app's shutdown, which drains the writer.
    assert sorted(r.username for r in read_records(log_path)) == sorted(names)


async def test_records_unwritable_at_shutdown_go_to_the_error_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from quart_app.writer import LogWriter

    store = FailingStore(str(tmp_path / "log.txt"))
    writer = LogWriter(
        store, max_pending=10, full_timeout=1, durable=False, logger=logging.getLogger("t")
    )
    await writer.start()
    store.error = OSError(errno.ENOSPC, "No space left on device")
    await writer.submit("登录日志:用户名:lost-but-not-silently\n".encode())
    await writer.stop(give_up_after=0.2)
    assert "lost-but-not-silently" in caplog.text
    assert "giving up" in caplog.text
