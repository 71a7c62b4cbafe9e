"""A disk that fills: no line torn or glued, and no login answered 200 that only waits in memory.

On a real small tmpfs: one store (exact file contents), and real hypercorn with
two workers, 200-character usernames, the disk full, then a rotation or a
killed worker; and real hypercorn without durable mode, SIGKILLed while the
disk is full.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import re
import resource
import signal
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import psutil
import pytest

from quart_app.records import TEXT_PREFIX, LoginRecord, parse_line, text_lines
from quart_app.stores.file import FileStore
from quart_app.tools.loadtest import LoadConfig, Summary, run_load
from quart_app.writer import LAG_BOUND

from helpers.disk import fill
from helpers.logs import flock_pids
from helpers.server import Server, raw_get, run_server, send_logins
from helpers.waiting import until

CUT_SHORT = " (cut short)"
"""What ends a line a write left torn: no login line ends so, and ``parse_line`` refuses it."""
WHEN = datetime(2026, 11, 23, 19, 11, 31, 123456, tzinfo=UTC)
DEADLINE = 10.0  # seconds any one wait in these tests may take


def long_names(tag: str, count: int) -> list[str]:
    """``count`` distinct 200-character usernames: big lines, a batch soon fills a page."""
    return [f"{tag}-{i:04d}-".ljust(200, "n") for i in range(count)]


def records(tag: str, count: int) -> list[LoginRecord]:
    return [LoginRecord(name, WHEN, "192.0.2.1") for name in long_names(tag, count)]


def whole_lines(data: bytes) -> bytes:
    """``data`` up to the end of its last whole line."""
    return data[: data.rfind(b"\n") + 1]


# Unit level: one store, a real full disk, exact contents.


async def test_a_batch_the_disk_cuts_short_is_cut_back_to_its_last_whole_line(
    small_disk: Callable[[str], Path],
) -> None:
    disk = small_disk("64k")
    path = disk / "log.txt"
    store = FileStore(str(path))
    await store.open()
    early, batch_records = records("early", 1), records("cut", 20)
    await store.write(store.prepare(early))
    filler = fill(disk)
    batch = store.prepare(batch_records)
    with pytest.raises(OSError) as failure:
        await store.write(batch)  # ~6 KiB of lines; the log's page has ~3.8 KiB left
    assert failure.value.errno == errno.ENOSPC
    room = resource.getpagesize() - len(text_lines(early))
    fitted = whole_lines(text_lines(batch_records)[:room])
    assert fitted, "no whole line fitted: the test proves nothing"
    assert path.read_bytes() == text_lines(early) + fitted
    # Nobody waits for this store to finish: the lock is free.
    other = os.open(store.lock_path, os.O_RDONLY)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(other)
    filler.unlink()
    await store.write(batch)  # the rest, from the line that did not fit
    await store.close()
    assert path.read_bytes() == text_lines(early + batch_records)


async def test_a_rotation_while_the_disk_is_full_leaves_no_fragment_anywhere(
    small_disk: Callable[[str], Path],
) -> None:
    disk = small_disk("64k")
    path = disk / "log.txt"
    store = FileStore(str(path), durable=True)
    await store.open()
    early, batch_records = records("early", 1), records("cut", 20)
    await store.write(store.prepare(early))
    filler = fill(disk)
    batch = store.prepare(batch_records)
    with pytest.raises(OSError):
        await store.write(batch)
    rotated = path.rename(disk / "log.txt.1")  # logrotate; then space comes back
    filler.unlink()
    await store.write(batch)
    await store.sync()
    await store.close()
    room = resource.getpagesize() - len(text_lines(early))
    fitted = whole_lines(text_lines(batch_records)[:room])
    assert rotated.read_bytes() == text_lines(early) + fitted
    assert path.read_bytes() == text_lines(batch_records)[len(fitted) :]
    # As `cat log.1 log` shows them: every line once, whole.
    assert rotated.read_bytes() + path.read_bytes() == text_lines(early + batch_records)


# Real hypercorn, two workers, the log on a 64 KiB disk that fills.


async def write_errors(server: Server) -> float:
    """Failed write attempts so far, all workers together (``/metrics``)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}/metrics") as response,
    ):
        text = await response.text()
    pattern = r"^quart_app_login_write_errors_total(?:\{[^}]*\})? (\S+)$"
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


async def until_writes_fail(server: Server, at_least: int = 3) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while await write_errors(server) < at_least:
        if loop.time() > deadline:
            pytest.fail(f"writes did not fail on the full disk within {DEADLINE} s")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # both workers' writers at the lock or retrying


def lines_of(path: Path) -> list[str]:
    """The file's lines as a reader sees them; it must end every line it holds."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path.name} ends in half a line: {data[-80:]!r}"
    return data.decode("utf-8", errors="replace").split("\n")[:-1]


def check_lines(
    lines: Iterable[str], runs: Iterable[Summary], *, all_acknowledged: bool
) -> list[str]:
    """Each line is a login sent, logged once; returns the lines ``parse_line`` refuses.

    With ``all_acknowledged`` every login answered 200 must have its line.
    """
    sent: set[str] = set()
    acknowledged: set[str] = set()
    for run in runs:
        sent.update(run.sent)
        acknowledged.update(run.acknowledged)
    logged: Counter[str] = Counter()
    refused = []
    for line in lines:
        try:
            logged[parse_line(line).username] += 1
        except ValueError:
            refused.append(line)
    forged = [name for name in logged if name not in sent]
    assert not forged, f"lines of logins nobody sent (glued lines): {forged}"
    assert not [name for name, count in logged.items() if count > 1], "a login logged twice"
    if all_acknowledged:
        missing = acknowledged - set(logged)
        assert not missing, f"{len(missing)} acknowledged logins have no line of their own"
    return refused


@pytest.mark.parametrize("durable", [False, True], ids=["plain", "durable"])
async def test_two_workers_a_full_disk_and_a_rotation_glue_no_lines(
    tmp_path: Path, small_disk: Callable[[str], Path], durable: bool
) -> None:
    disk = small_disk("64k")
    log_path, rotated = disk / "login_log.txt", disk / "login_log.txt.1"
    env = {
        "QUART_LOGIN_LOG_PATH": str(log_path),
        "QUART_LOGIN_LOG_DURABLE": str(durable).lower(),
        "QUART_LOGIN_LOG_FULL_TIMEOUT": "15",  # durable logins wait out the full disk
    }
    with run_server(tmp_path, env, workers=2) as server:
        runs = [await send_logins(server.url, long_names("before", 4))]
        await until(lambda: log_path.read_bytes().count(b"\n") == 4, "the first lines", DEADLINE)
        filler = fill(disk)
        # ~44 KiB of lines: a few fit in the log's last page, then writes fail.
        sending = asyncio.create_task(send_logins(server.url, long_names("full", 150)))
        await until_writes_fail(server)
        log_path.rename(rotated)  # logrotate, and space comes back
        filler.unlink()
        runs.append(await asyncio.wait_for(sending, 30))
        runs.append(await send_logins(server.url, long_names("after", 4)))
        assert await asyncio.to_thread(server.stop, signal.SIGTERM, 30) == 0, server.stderr
    refused = check_lines(lines_of(rotated) + lines_of(log_path), runs, all_acknowledged=True)
    assert refused == []
    assert len(runs[1].acknowledged) >= 100, server.stderr


@pytest.mark.parametrize("durable", [False, True], ids=["plain", "durable"])
async def test_two_workers_a_full_disk_and_a_killed_worker_glue_no_lines(
    tmp_path: Path, small_disk: Callable[[str], Path], durable: bool
) -> None:
    disk = small_disk("64k")
    log_path = disk / "login_log.txt"
    env = {
        "QUART_LOGIN_LOG_PATH": str(log_path),
        "QUART_LOGIN_LOG_DURABLE": str(durable).lower(),
        "QUART_LOGIN_LOG_FULL_TIMEOUT": "15",
    }
    with run_server(tmp_path, env, workers=2) as server:
        runs = [await send_logins(server.url, long_names("before", 4))]
        await until(lambda: log_path.read_bytes().count(b"\n") == 4, "the first lines", DEADLINE)
        filler = fill(disk)
        sending = asyncio.create_task(send_logins(server.url, long_names("full", 150)))
        await until_writes_fail(server)
        # The worker holding the lock, if one does, as the OOM killer would.
        holders, _ = flock_pids(disk / ".login_log.txt.lock")
        workers = server.workers()
        victim = next((w for w in workers if w.pid in holders), workers[0])
        victim.kill()
        filler.unlink()  # space comes back: the other worker drains as hypercorn stops it
        runs.append(await asyncio.wait_for(sending, 30))
        await asyncio.to_thread(server.process.wait, 30)
        _, alive = await asyncio.to_thread(psutil.wait_procs, workers, 10)
        assert not alive
    # Only a worker killed inside write(2) can leave half a line; it is ended
    # so that it reads as no login, and nothing is glued to it.
    refused = check_lines(lines_of(log_path), runs, all_acknowledged=durable)
    assert len(refused) <= 1, refused
    for line in refused:
        assert line.endswith(CUT_SHORT) and line.count(TEXT_PREFIX) == 1, line


# Without durable mode: logins wait for their line while writes fail.


def logged_usernames(path: Path) -> set[str]:
    """The usernames of the whole, readable lines of ``path``."""
    *lines, _ = path.read_text(encoding="utf-8", errors="replace").split("\n")
    names = set()
    for line in lines:
        with suppress(ValueError):
            names.add(parse_line(line).username)
    return names


async def test_a_full_disk_acknowledges_no_login_and_sigkill_loses_none(
    small_disk: Callable[[str], Path], tmp_path: Path
) -> None:
    # Without durable mode: while writes fail, a login waits for its line
    # and gets 503, so a crash cannot lose what was answered 200.
    log_path = small_disk("64k") / "login_log.txt"
    env = {"QUART_LOGIN_LOG_PATH": str(log_path), "QUART_LOGIN_LOG_FULL_TIMEOUT": "0.5"}
    with run_server(tmp_path, env) as server:
        fill(log_path.parent)
        # Taken before the writer tried: answered at once, the lag bound's allowance.
        assert await raw_get(server.url, b"/login/?username=first") == (200, "登录成功")
        async with asyncio.timeout(10):
            while "writes are failing" not in (await raw_get(server.url, b"/readyz"))[1]:
                await asyncio.sleep(0.02)
        status, body = await raw_get(server.url, b"/login/?username=second")
        assert (status, "may or may not be logged" in body) == (503, True)
        names = [f"full-{i:04d}-" + "x" * 200 for i in range(200)]
        burst = await send_logins(server.url, names, concurrency=50)
        assert burst.statuses == {503: len(names)}
        server.signal_group(signal.SIGKILL)
        await asyncio.to_thread(server.process.wait, 10)
    assert logged_usernames(log_path) == set()  # "first" alone was lost: within the bound


async def test_two_workers_on_a_full_disk_lose_at_most_a_moment_of_logins_to_sigkill(
    small_disk: Callable[[str], Path], tmp_path: Path
) -> None:
    log_path = small_disk("64k") / "login_log.txt"
    env = {"QUART_LOGIN_LOG_PATH": str(log_path), "QUART_LOGIN_LOG_FULL_TIMEOUT": "0.5"}
    names = [f"full-{i:04d}-" + "x" * 200 for i in range(300)]
    answered: list[tuple[float, int]] = []  # (seconds, answers so far)
    with run_server(tmp_path, env, workers=2) as server:
        fill(log_path.parent)
        config = LoadConfig(server.url, names=names, concurrency=20, method="post", timeout=60)
        run = await run_load(
            config,
            progress=lambda done, elapsed: answered.append((elapsed, done)),
            progress_interval=0.005,
        )
        server.signal_group(signal.SIGKILL)
        await asyncio.to_thread(server.process.wait, 10)
    lost = set(run.acknowledged) - logged_usernames(log_path)
    # Each worker answers at once only logins taken while its oldest unwritten
    # record is younger than the lag bound, before its first failed write is
    # known: a moment (LAG_BOUND) of answers each. The count in a moment is the
    # machine's, read from the run itself: the most answers in any 2 LAG_BOUND.
    moment = max(
        done - next(before for at, before in answered if at >= elapsed - 2 * LAG_BOUND)
        for elapsed, done in answered
    )
    assert len(lost) <= 2 * max(moment, 20), f"{len(lost)} lost; a moment holds {moment}"
    assert run.statuses.get(503, 0) >= len(names) - 2 * max(moment, 20)
