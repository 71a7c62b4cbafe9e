"""The writer under stress: a stalled disk, a full queue, durable mode, start-up."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from quart import Quart
from quart.testing.app import LifespanError

from conftest import GatedStore, read_records, wait_for_records


def gated_app(make_app, **config) -> tuple[Quart, list[GatedStore]]:
    stores: list[GatedStore] = []

    def factory(settings):
        stores.append(GatedStore(settings.log_path))
        return stores[-1]

    return make_app(store=factory, **config), stores


async def test_requests_answer_while_the_disk_is_stalled(make_app, log_path: Path) -> None:
    app, [store] = gated_app(make_app)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        first = await client.get("/login/?username=first")
        assert first.status_code == 200
        await asyncio.to_thread(store.entered.wait, 5)  # the writer is now stuck in a write

        names = [f"user-{i}" for i in range(100)]
        logins = await asyncio.gather(*(client.get(f"/login/?username={n}") for n in names))
        index = await client.get("/")

        # Every request was answered while the write is still blocked.
        assert not store.gate.is_set()
        assert [r.status_code for r in logins] == [200] * len(names)
        assert index.status_code == 200
        assert read_records(log_path) == []

        store.gate.set()
        records = await wait_for_records(log_path, len(names) + 1)
    assert [r.username for r in records] == ["first", *names]
    # The 100 logins queued behind the stall went out as one batch.
    assert store.appends == 2


async def test_slow_writes_catch_up(make_app, log_path: Path) -> None:
    class SlowStore(GatedStore):
        def _wait(self) -> None:
            threading.Event().wait(0.2)  # 200 ms per batch, in the writer's thread

    app = make_app(store=lambda s: SlowStore(s.log_path))
    names = [f"slow-{i}" for i in range(300)]
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for chunk in range(0, len(names), 50):
            batch = names[chunk : chunk + 50]
            responses = await asyncio.gather(*(client.get(f"/login/?username={n}") for n in batch))
            assert {r.status_code for r in responses} == {200}
        records = await wait_for_records(log_path, len(names))
    assert [r.username for r in records] == names


async def test_full_queue_answers_503_and_logs_only_what_it_took(make_app, log_path: Path) -> None:
    app, [store] = gated_app(make_app, LOGIN_LOG_MAX_PENDING=3, LOGIN_LOG_FULL_TIMEOUT=0.2)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        responses = [await client.get(f"/login/?username=u{i}") for i in range(5)]
        assert [r.status_code for r in responses] == [200, 200, 200, 503, 503]
        body = await responses[3].get_data(as_text=True)
        assert "login not recorded" in body and "3 records waiting" in body
        health = await client.get("/healthz")
        assert (await health.get_json())["pending"] == 3
        store.gate.set()
        # Room again once the writer caught up.
        await wait_for_records(log_path, 3)
        assert (await client.get("/login/?username=u5")).status_code == 200
    assert [r.username for r in read_records(log_path)] == ["u0", "u1", "u2", "u5"]


async def test_durable_answers_only_after_fsync(
    make_app, log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    fsync_entered = threading.Event()
    fsync_gate = threading.Event()
    real_fsync = os.fsync

    def gated_fsync(fd: int) -> None:
        fsync_entered.set()
        fsync_gate.wait(10)
        real_fsync(fd)
        events.append("fsync")

    monkeypatch.setattr(os, "fsync", gated_fsync)
    app = make_app(LOGIN_LOG_DURABLE=True)
    async with app.test_app() as test_app:
        client = test_app.test_client()

        async def login() -> None:
            response = await client.get("/login/?username=durable")
            # The line is on disk by the time the client hears of it.
            events.append(f"response {response.status_code} {len(read_records(log_path))}")

        task = asyncio.create_task(login())
        await asyncio.to_thread(fsync_entered.wait, 5)
        await asyncio.sleep(0.2)
        assert not task.done(), "durable login answered before its fsync finished"
        fsync_gate.set()
        await task
    assert events == ["fsync", "response 200 1"]


async def test_durable_logins_share_fsyncs(
    make_app, log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    app, [store] = gated_app(make_app, LOGIN_LOG_DURABLE=True)
    names = [f"d{i}" for i in range(200)]
    async with app.test_app() as test_app:
        client = test_app.test_client()
        tasks = [asyncio.create_task(client.get(f"/login/?username={n}")) for n in names]
        await asyncio.to_thread(store.entered.wait, 5)
        await asyncio.sleep(0.1)  # let the rest queue up behind the first write
        store.gate.set()
        responses = await asyncio.gather(*tasks)
    assert {r.status_code for r in responses} == {200}
    assert sorted(r.username for r in read_records(log_path)) == sorted(names)
    # Group commit: far fewer fsyncs than logins (one per batch).
    assert len(fsyncs) == store.appends <= 3


async def test_startup_fails_on_an_unwritable_path(make_app, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "login_log.txt"
    app = make_app(LOGIN_LOG_PATH=str(missing))
    with pytest.raises(
        LifespanError, match=r"cannot open the login log .*no-such-dir.*No such file or directory"
    ):
        async with app.test_app():
            pass


async def test_startup_fails_when_the_path_is_a_directory(make_app, tmp_path: Path) -> None:
    app = make_app(LOGIN_LOG_PATH=str(tmp_path))
    with pytest.raises(LifespanError, match="Is a directory"):
        async with app.test_app():
            pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
async def test_startup_fails_without_permission(make_app, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    app = make_app(LOGIN_LOG_PATH=str(locked / "login_log.txt"))
    with pytest.raises(LifespanError, match="Permission denied"):
        async with app.test_app():
            pass


async def test_login_when_not_serving_is_refused_not_lost(app: Quart) -> None:
    response = await app.test_client().get("/login/?username=nobody")
    assert response.status_code == 503
    assert "not running" in await response.get_data(as_text=True)


async def test_a_full_queue_cuts_the_batching_wait_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from quart_app import writer as writer_module
    from quart_app.store import FileStore

    # Far longer than full_timeout: a login waiting for room would get LogFull
    # if the writer sat out its batching wait instead of writing at once.
    monkeypatch.setattr(writer_module, "BATCH_LINGER", 30.0)
    path = tmp_path / "log.txt"
    writer = writer_module.LogWriter(
        FileStore(str(path)),
        max_pending=10,
        full_timeout=5.0,
        durable=False,
        logger=logging.getLogger("test"),
    )
    await writer.start()
    lines = [f"line {i}\n".encode() for i in range(100)]
    for batch in (lines[:2], lines[2:3]):
        for line in batch:
            await writer.submit(line)
        # The first batch goes out at once (nothing was written lately); after
        # a batch of two the writer waits for more to batch, up to BATCH_LINGER.
        await asyncio.sleep(0.05)
    for line in lines[3:]:
        await writer.submit(line)
    assert writer.pending <= 10
    await writer.stop()
    assert path.read_bytes() == b"".join(lines)


async def test_logins_one_at_a_time_are_written_at_once(
    make_app, log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quart_app import writer as writer_module

    # Batches are spaced out under load; one login alone must not wait for that.
    monkeypatch.setattr(writer_module, "BATCH_LINGER", 30.0)
    app = make_app()
    names = ["alone", "then-me", "and-me"]
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for count, name in enumerate(names, 1):
            assert (await client.get(f"/login/?username={name}")).status_code == 200
            records = await wait_for_records(log_path, count, timeout=5)
    assert [r.username for r in records] == names
