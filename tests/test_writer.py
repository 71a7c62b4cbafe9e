"""The writer: a stalled disk, a full queue, durable mode, batches, start-up, readiness."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import math
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from quart import Quart
from quart.testing.app import LifespanError

from quart_app.metrics import DEFAULT_APP, Ledger, ledger_file_name
from quart_app.records import LoginRecord
from quart_app.stores.file import FileStore
from quart_app.writer import LogUnavailable, LogWriter

from helpers.logs import read_records, wait_for_records
from helpers.stores import ControlledStore, store_of, writer_of
from helpers.waiting import until


def record(name: str) -> LoginRecord:
    return LoginRecord(name, datetime.now(UTC), "192.0.2.1")


async def test_a_stalled_disk_holds_up_logins_and_nothing_else(make_app, log_path: Path) -> None:
    app = make_app(store=ControlledStore)
    store = store_of(app)
    store.gate.clear()
    async with app.test_app() as test_app:
        client = test_app.test_client()
        first = await client.get("/login/?username=first")
        assert first.status_code == 200  # the log kept up so far: answered at once
        await asyncio.to_thread(store.entered.wait, 5)  # the writer is now stuck in a write
        await asyncio.sleep(0.2)  # longer than the lag bound: the log no longer keeps up

        names = [f"user-{i}" for i in range(100)]
        logins = [asyncio.create_task(client.get(f"/login/?username={n}")) for n in names]
        # Everything but the logins is answered while the write is blocked; the
        # logins wait for their lines.
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/livez")).status_code == 200
        assert not any(login.done() for login in logins)
        assert read_records(log_path) == []

        store.gate.set()
        responses = await asyncio.gather(*logins)
        assert [r.status_code for r in responses] == [200] * len(names)
        records = read_records(log_path)  # at once: each was answered once written
    assert [r.username for r in records] == ["first", *names]
    # The 100 logins queued behind the stall went out as one batch.
    assert store.writes == 2


async def test_slow_writes_catch_up(make_app, log_path: Path) -> None:
    app = make_app(store=ControlledStore)
    store_of(app).delay = 0.2  # 200 ms per batch, in the writer's thread
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
    app = make_app(store=ControlledStore, LOGIN_LOG_MAX_PENDING=3, LOGIN_LOG_FULL_TIMEOUT=0.2)
    writer_of(app).lag_bound = math.inf  # the queue's bound alone, however slow the machine
    store = store_of(app)
    store.gate.clear()
    async with app.test_app() as test_app:
        client = test_app.test_client()
        responses = [await client.get(f"/login/?username=u{i}") for i in range(5)]
        assert [r.status_code for r in responses] == [200, 200, 200, 503, 503]
        body = await responses[3].get_data(as_text=True)
        assert "login not confirmed" in body and "3 records waiting" in body
        assert responses[3].headers["Retry-After"] == "1"
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
    sync_entered = threading.Event()
    sync_gate = threading.Event()
    real_sync = os.fdatasync

    def gated_sync(fd: int) -> None:
        sync_entered.set()
        sync_gate.wait(10)
        real_sync(fd)
        events.append("fsync")

    monkeypatch.setattr("quart_app.stores.file._datasync", gated_sync)
    app = make_app(LOGIN_LOG_DURABLE=True)
    async with app.test_app() as test_app:
        client = test_app.test_client()

        async def login() -> None:
            response = await client.get("/login/?username=durable")
            # The line is on disk by the time the client hears of it.
            events.append(f"response {response.status_code} {len(read_records(log_path))}")

        task = asyncio.create_task(login())
        await asyncio.to_thread(sync_entered.wait, 5)
        await asyncio.sleep(0.2)
        assert not task.done(), "durable login answered before its fsync finished"
        sync_gate.set()
        await task
    assert events == ["fsync", "response 200 1"]


async def test_durable_logins_share_fsyncs(
    make_app, log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    real_sync = os.fdatasync

    def counting_sync(fd: int) -> None:
        syncs.append(fd)
        real_sync(fd)

    monkeypatch.setattr("quart_app.stores.file._datasync", counting_sync)
    app = make_app(store=ControlledStore, LOGIN_LOG_DURABLE=True)
    store = store_of(app)
    store.gate.clear()
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
    assert len(syncs) == store.writes <= 3


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
    assert "the login log is stopped" in await response.get_data(as_text=True)


async def test_a_full_queue_cuts_the_batching_wait_short(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    # Far longer than full_timeout: a login waiting for room would get LogFull
    # if the writer sat out its batching wait instead of writing at once.
    writer = LogWriter(FileStore(str(path)), max_pending=10, full_timeout=5.0, linger=30.0)
    await writer.start()
    records = [record(f"line-{i}") for i in range(100)]
    for batch in (records[:2], records[2:3]):
        for item in batch:
            await writer.submit(item)
        # The first batch goes out at once (nothing was written lately); after
        # a batch of two the writer waits for more to batch, up to the linger.
        await asyncio.sleep(0.05)
    for item in records[3:]:
        await writer.submit(item)
    assert writer.pending <= 10
    assert await writer.stop()
    assert read_records(path) == records


async def test_logins_one_at_a_time_are_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    # Batches are spaced out under load; one login alone must not wait for that.
    writer = LogWriter(FileStore(str(path)), linger=30.0)
    await writer.start()
    names = ["alone", "then-me", "and-me"]
    for count, name in enumerate(names, 1):
        await writer.submit(record(name))
        await wait_for_records(path, count, timeout=5)
    assert await writer.stop()
    assert [r.username for r in read_records(path)] == names


async def test_a_group_larger_than_a_batch_is_written_whole_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    store = ControlledStore(FileStore(str(path)))
    store.gate.clear()  # everything queues up behind the first write
    writer = LogWriter(store, max_batch=100)
    await writer.start()
    records = [record(f"r{i:05d}") for i in range(1001)]
    await writer.submit(records[0])
    await asyncio.to_thread(store.entered.wait, 5)
    for item in records[1:]:
        await writer.submit(item)
    store.gate.set()
    assert await writer.stop()
    assert read_records(path) == records
    assert store.writes == 1 + 10  # the first alone, then 1,000 in batches of 100


async def test_the_oldest_pending_age_grows_while_a_write_hangs(tmp_path: Path) -> None:
    store = ControlledStore(FileStore(str(tmp_path / "log.txt")))
    store.gate.clear()
    now = [datetime.now(UTC)]
    writer = LogWriter(store, logger=logging.getLogger("test"), clock=lambda: now[0])
    await writer.start()
    await writer.submit(LoginRecord("stuck", now[0], "192.0.2.1"))
    await asyncio.to_thread(store.entered.wait, 5)
    assert writer.oldest_age() == 0
    now[0] += timedelta(seconds=0.3)
    assert writer.oldest_age() == pytest.approx(0.3)
    assert writer.stats()["pending"] == 1
    store.gate.set()
    assert await writer.stop()
    assert writer.oldest_age() == 0


async def test_offer_queues_only_what_needs_no_waiting(tmp_path: Path) -> None:
    writer = LogWriter(FileStore(str(tmp_path / "log.txt")), max_pending=1)
    assert not writer.offer(record("before-start"))  # not running: the caller awaits submit
    await writer.start()
    assert writer.offer(record("queued"))
    assert not writer.offer(record("no-room"))  # full: the caller waits in submit
    assert await writer.stop()
    durable = LogWriter(FileStore(str(tmp_path / "durable.txt"), durable=True), durable=True)
    await durable.start()
    assert not durable.offer(record("durable"))  # durable logins wait for their sync
    assert await durable.stop()
    assert [r.username for r in read_records(tmp_path / "log.txt")] == ["queued"]


async def test_refuse_waiting_answers_every_waiting_login_and_keeps_the_records(
    tmp_path: Path,
) -> None:
    store = ControlledStore(FileStore(str(tmp_path / "log.txt")))
    store.gate.clear()
    writer = LogWriter(store, max_pending=2, durable=True, logger=logging.getLogger("test"))
    await writer.start()
    in_flight = asyncio.create_task(writer.submit(record("in-flight")))
    await asyncio.to_thread(store.entered.wait, 5)  # its write hangs
    queued = asyncio.create_task(writer.submit(record("queued")))
    no_room = asyncio.create_task(writer.submit(record("no-room")))
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in (in_flight, queued, no_room))

    writer.refuse_waiting("the server is stopping")
    results = await asyncio.wait_for(
        asyncio.gather(in_flight, queued, no_room, return_exceptions=True), 5
    )
    assert [str(result) for result in results] == ["the server is stopping"] * 3
    with pytest.raises(LogUnavailable, match="the server is stopping"):
        await writer.submit(record("later"))  # would wait for room: refused at once, not taken
    store.gate.set()
    assert await writer.stop()  # what was taken is still written
    assert [r.username for r in read_records(tmp_path / "log.txt")] == ["in-flight", "queued"]


async def test_unless_refused_gives_the_result_or_refuses_and_cancels_the_wait(
    tmp_path: Path,
) -> None:
    writer = LogWriter(FileStore(str(tmp_path / "log.txt")), logger=logging.getLogger("test"))
    await writer.start()
    assert await writer.unless_refused(asyncio.sleep(0, b"body")) == b"body"
    body = asyncio.get_running_loop().create_future()  # a body that never arrives
    waiting = asyncio.create_task(writer.unless_refused(body))
    await asyncio.sleep(0.05)
    writer.refuse_waiting("the server is stopping")
    with pytest.raises(LogUnavailable, match="the server is stopping"):
        await asyncio.wait_for(waiting, 5)
    assert body.cancelled()
    with pytest.raises(LogUnavailable, match="the server is stopping"):
        await writer.unless_refused(asyncio.sleep(0))  # refused before it starts
    assert await writer.stop()


class RefusingStore:
    """Sets aside every record named ``refused``; its syncs wait for ``synced``."""

    kind = "test"
    description = "a test store"

    def __init__(self) -> None:
        self.kept: list[str] = []
        self.synced = asyncio.Event()

    async def open(self) -> None:
        pass

    def prepare(self, records: list[LoginRecord]) -> list[LoginRecord]:
        return records

    async def write(self, batch: list[LoginRecord]) -> list[LoginRecord]:
        self.kept += [r.username for r in batch if r.username != "refused"]
        return [r for r in batch if r.username == "refused"]

    async def sync(self) -> None:
        await self.synced.wait()

    async def close(self) -> None:
        pass


async def test_a_record_set_aside_is_not_given_up_again_when_the_drain_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RefusingStore()
    writer = LogWriter(store, durable=True, drain_timeout=0.2, logger=logging.getLogger("t"))
    await writer.start()
    logins = [asyncio.create_task(writer.submit(record(n))) for n in ("kept", "refused")]
    await asyncio.sleep(0.05)  # both written; the sync hangs
    with caplog.at_level(logging.ERROR, "t"):
        assert not await writer.stop()
    assert (writer.set_aside_count, writer.unconfirmed) == (1, 1)
    assert writer.ledger().taken == writer.ledger().written + 1 + 1  # set aside + unconfirmed
    lines = caplog.text.splitlines()
    assert sum("用户名:refused," in line for line in lines) == 1, caplog.text
    assert sum("NOT CONFIRMED WRITTEN" in line and "用户名:kept," in line for line in lines) == 1
    for login in logins:
        with pytest.raises(LogUnavailable):
            await login


async def test_not_ready_because_names_the_state_when_the_writer_is_not_running(
    tmp_path: Path,
) -> None:
    writer = LogWriter(FileStore(str(tmp_path / "log.txt")), logger=logging.getLogger("t"))
    assert writer.not_ready_because(5, 0.9) == ["the login log is stopped"]
    writer.state = "running"  # as if the task were gone without anyone noticing
    assert writer.not_ready_because(5, 0.9) == ["the writer task is not running"]

    store = ControlledStore(FileStore(str(tmp_path / "draining.txt")))
    store.gate.clear()
    draining = LogWriter(store, logger=logging.getLogger("t"))
    await draining.start()
    assert draining.not_ready_because(5, 0.9) == []
    assert draining.offer(record("last"))
    await asyncio.to_thread(store.entered.wait, 5)
    stopping = asyncio.create_task(draining.stop())
    await until(lambda: draining.state == "draining", "the stop began")
    assert draining.not_ready_because(5, 0.9) == ["the login log is draining"]
    store.gate.set()
    assert await asyncio.wait_for(stopping, 10)

    class BrokenStore(ControlledStore):
        def prepare(self, records: list[LoginRecord]) -> list[LoginRecord]:
            raise RuntimeError("a bug in the store")

    broken = BrokenStore(FileStore(str(tmp_path / "failed.txt")))
    failed = LogWriter(broken, logger=logging.getLogger("t"))
    await failed.start()
    assert failed.offer(record("first"))
    await until(lambda: failed.state == "failed", "the writer task ended")
    assert failed.not_ready_because(5, 0.9) == ["the login log is failed"]
    await failed.stop()


async def test_not_ready_because_names_failing_writes(tmp_path: Path) -> None:
    store = ControlledStore(FileStore(str(tmp_path / "log.txt")))
    store.error = OSError(errno.ENOSPC, "No space left on device")
    writer = LogWriter(store, logger=logging.getLogger("t"))
    await writer.start()
    assert writer.offer(record("kept"))
    await until(lambda: writer.failing, "the write failed")
    assert writer.not_ready_because(60, 0.9) == ["writes are failing"]
    store.error = None
    await until(lambda: not writer.failing, "the retry succeeded")
    assert writer.not_ready_because(60, 0.9) == []
    assert await writer.stop()


async def test_not_ready_because_names_a_stall(tmp_path: Path) -> None:
    store = ControlledStore(FileStore(str(tmp_path / "log.txt")))
    store.gate.clear()
    writer = LogWriter(store, logger=logging.getLogger("t"))
    await writer.start()
    taken = datetime.now(UTC) - timedelta(seconds=10)
    assert writer.offer(LoginRecord("stuck", taken, "192.0.2.1"))
    await asyncio.to_thread(store.entered.wait, 5)  # its write hangs
    assert writer.not_ready_because(0.3, 0.9) == ["a record has waited over 0.3 s"]
    assert writer.not_ready_because(5, 0.9) == ["a record has waited over 5 s"]
    assert writer.not_ready_because(60, 0.9) == []
    store.gate.set()
    assert await writer.stop()


async def test_not_ready_because_names_a_queue_above_the_high_water_mark(tmp_path: Path) -> None:
    store = ControlledStore(FileStore(str(tmp_path / "log.txt")))
    store.gate.clear()
    writer = LogWriter(store, max_pending=10, logger=logging.getLogger("t"))
    writer.lag_bound = math.inf  # offer() takes every record, however slow the machine
    await writer.start()
    for i in range(5):
        assert writer.offer(record(f"h{i}"))
    assert writer.not_ready_because(60, 0.5) == []  # 5 of 10: at the mark, not over it
    assert writer.offer(record("h5"))
    assert writer.not_ready_because(60, 0.5) == ["over 50% of the queue is full"]
    assert writer.not_ready_because(60, 0.75) == []
    store.gate.set()
    assert await writer.stop()


async def test_not_ready_because_gives_every_reason_that_holds_in_order(tmp_path: Path) -> None:
    store = ControlledStore(FileStore(str(tmp_path / "log.txt")))
    store.error = OSError(errno.EIO, "Input/output error")
    writer = LogWriter(store, max_pending=2, logger=logging.getLogger("t"))
    await writer.start()
    assert writer.offer(LoginRecord("old", datetime.now(UTC) - timedelta(seconds=10), "-"))
    await until(lambda: writer.failing, "the write failed")
    assert writer.not_ready_because(1, 0.4) == [
        "writes are failing",
        "a record has waited over 1 s",
        "over 40% of the queue is full",
    ]
    store.error = None
    assert await writer.stop()


async def test_the_figures_are_published_every_interval_and_at_the_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ledger other workers' scrapes read: it moves while a write hangs.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    published = tmp_path / ledger_file_name(DEFAULT_APP, os.getpid())

    def ledger() -> dict[str, float] | None:
        try:
            figures = json.loads(published.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        assert figures.pop("app") == DEFAULT_APP
        return figures

    store = ControlledStore(FileStore(str(tmp_path / "log.txt")))
    store.gate.clear()
    now = [datetime.now(UTC)]
    writer = LogWriter(store, publish_interval=0.01, clock=lambda: now[0])
    await writer.start()
    assert writer.offer(LoginRecord("stuck", now[0], "192.0.2.1"))
    try:
        await asyncio.to_thread(store.entered.wait, 5)
        hung = Ledger(taken=1, pending=1)._asdict()
        await until(lambda: ledger() == hung, "the figures of the hung write published")
        now[0] += timedelta(seconds=7)
        hung["oldest_pending_age"] = 7.0
        # Within a second: publishing at the default interval would miss it.
        await until(lambda: ledger() == hung, "its age published again", timeout=0.9)
    finally:
        store.gate.set()
    assert await writer.stop()
    assert ledger() == Ledger(taken=1, written=1)._asdict()
