"""The log file itself: a torn last line, symlinks, permissions, FIFOs, the directory entry."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
import re
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from quart.testing.app import LifespanError

from quart_app.config import ConfigError
from quart_app.records import LoginRecord, format_jsonl, format_text, parse_line, text_lines
from quart_app.stores.file import FileState, FileStore, LogPathError

from helpers.logs import flock_pids, read_records, wait_for_records
from helpers.server import run_server, send_logins
from helpers.stores import store_of
from helpers.waiting import until

FRAGMENT = "登录日志:用户名:cut-short,登录时间:2026-11-2"
CUT_SHORT = " (cut short)"
"""What ends a torn line: no login line ends so, and ``parse_line`` refuses it."""
WHEN = datetime(2026, 11, 23, 19, 11, 31, 123456, tzinfo=UTC)


def records(tag: str, count: int) -> list[LoginRecord]:
    return [LoginRecord(f"{tag}-{i}", WHEN, "192.0.2.1") for i in range(count)]


def assert_lock_free(store: FileStore) -> None:
    """No store holds the log's lock now: another process could append at once."""
    other = os.open(store.lock_path, os.O_RDONLY)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(other)


async def test_a_torn_last_line_is_ended_before_the_next_login(make_app, log_path: Path) -> None:
    # A disk that filled up during a stop left half a line at the end.
    log_path.write_text(f"{FRAGMENT}", encoding="utf-8")
    async with make_app().test_app() as test_app:
        assert (await test_app.test_client().get("/login/?username=next")).status_code == 200
    first, second, end = log_path.read_text(encoding="utf-8").split("\n")
    assert (first, end) == (FRAGMENT + CUT_SHORT, "")
    with pytest.raises(ValueError):
        read_records(log_path)  # the fragment stays a bad line of its own ...
    log_path.write_text(second + "\n", encoding="utf-8")
    [record] = read_records(log_path)  # ... and the new line is whole and clean
    assert record.username == "next"


async def test_a_file_ending_in_a_newline_is_left_as_it_is(make_app, log_path: Path) -> None:
    log_path.write_text("earlier\n", encoding="utf-8")
    async with make_app().test_app() as test_app:
        assert (await test_app.test_client().get("/login/?username=next")).status_code == 200
    assert log_path.read_text(encoding="utf-8").startswith("earlier\n登录日志:用户名:next,")


@pytest.mark.parametrize(
    "fragment",
    [
        format_text(LoginRecord("alice", WHEN, "10.0.0.12")).decode()[:-2],  # "10.0.0.1"
        format_text(LoginRecord("alice", WHEN, "2001:db8::1")).decode()[:-2],  # "2001:db8::"
        format_jsonl(LoginRecord("alice", WHEN, "10.0.0.12")).decode()[:-1],  # all but "\n"
    ],
    ids=["ipv4", "ipv6", "jsonl"],
)
async def test_a_torn_line_that_would_read_as_a_login_is_ended_as_none(
    make_app, log_path: Path, fragment: str
) -> None:
    # Cut inside its IP, a line can hold another valid address: ended with a
    # bare newline it would be a login from where nobody logged in.
    assert parse_line(fragment)
    log_path.write_text(fragment, encoding="utf-8")
    async with make_app().test_app() as test_app:
        assert (await test_app.test_client().get("/login/?username=next")).status_code == 200
    first, second, end = log_path.read_text(encoding="utf-8").split("\n")
    assert (first, end) == (fragment + CUT_SHORT, "")
    with pytest.raises(ValueError):
        parse_line(first)
    assert parse_line(second).username == "next"


async def test_two_workers_opening_a_torn_file_end_it_once(tmp_path: Path) -> None:
    log_path = tmp_path / "login_log.txt"
    log_path.write_text(FRAGMENT, encoding="utf-8")
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(log_path)}, workers=2) as server:
        await send_logins(server.url, [f"w{i}" for i in range(50)])
        assert server.stop() == 0, server.stderr
    lines = log_path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == FRAGMENT + CUT_SHORT
    assert "" not in lines[1:-1], "an empty line"
    assert len(lines) == 1 + 50 + 1


async def test_start_refuses_a_symlink_at_the_log_path(make_app, log_path: Path) -> None:
    target = log_path.with_name("passwd")
    target.write_text("root:x:0:0\n")
    log_path.symlink_to(target)
    with pytest.raises(LifespanError, match="is a symbolic link"):
        async with make_app().test_app():
            pass
    assert target.read_text() == "root:x:0:0\n"


async def test_a_symlink_planted_after_rotation_is_never_written_through(
    make_app, log_path: Path
) -> None:
    target = log_path.with_name("passwd")
    target.write_text("root:x:0:0\n")
    app = make_app()
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/login/?username=before")).status_code == 200
        await wait_for_records(log_path, 1)
        log_path.rename(log_path.with_suffix(".1"))
        log_path.symlink_to(target)
        assert (await client.get("/login/?username=root::0:0:evil")).status_code == 200
        for _ in range(200):
            if (await client.get("/readyz")).status_code == 503:
                break
            await asyncio.sleep(0.01)
        health = await client.get("/healthz")
        assert health.status_code == 503
        assert "symbolic link" in (await health.get_json())["last_error"]
        assert target.read_text() == "root:x:0:0\n"
        # The operator removes the link: the waiting record is written.
        log_path.unlink()
        [record] = await wait_for_records(log_path, 1)
        assert record.username == "root::0:0:evil"
    assert target.read_text() == "root:x:0:0\n"


@pytest.mark.parametrize(
    ("setting", "mode"),
    [(None, 0o640), ("0600", 0o600), (0o644, 0o644)],
    ids=["default", "octal-string", "int"],
)
async def test_a_created_log_gets_exactly_its_mode_whatever_the_umask(
    make_app, log_path: Path, setting: str | int | None, mode: int
) -> None:
    config = {} if setting is None else {"LOGIN_LOG_FILE_MODE": setting}
    old_umask = os.umask(0o002)  # would leave 0664 of a 0666 request
    try:
        app = make_app(**config)
        async with app.test_app() as test_app:
            assert (await test_app.test_client().get("/login/?username=m")).status_code == 200
            # Rotation re-creates it, with the same mode.
            await wait_for_records(log_path, 1)
            log_path.unlink()
            assert (await test_app.test_client().get("/login/?username=n")).status_code == 200
            await wait_for_records(log_path, 1)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(log_path.stat().st_mode) == mode


async def test_the_lock_file_beside_the_log_is_the_owners_alone(make_app, log_path: Path) -> None:
    # Whoever may read a 0644 log may not open its lock file, so no reader can
    # take the lock and hold up the writers (docs/guarantees.md).
    old_umask = os.umask(0)  # would leave any mode asked for as it is
    try:
        async with make_app(LOGIN_LOG_FILE_MODE="0644").test_app() as test_app:
            assert (await test_app.test_client().get("/login/?username=l")).status_code == 200
    finally:
        os.umask(old_umask)
    lock = log_path.with_name(f".{log_path.name}.lock")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_the_file_mode_setting_is_checked(make_app) -> None:
    for bad in ["rw-r-----", "0999", 0o1777, "0400"]:
        with pytest.raises(ConfigError, match="LOGIN_LOG_FILE_MODE"):
            make_app(LOGIN_LOG_FILE_MODE=bad)


async def test_a_fifo_nobody_reads_is_refused_at_start_without_hanging(
    make_app, log_path: Path
) -> None:
    os.mkfifo(log_path)
    async with asyncio.timeout(10):
        with pytest.raises(LifespanError, match="a FIFO that no process reads"):
            async with make_app().test_app():
                pass


def test_a_real_server_with_a_fifo_nobody_reads_exits_at_once(tmp_path: Path) -> None:
    log_path = tmp_path / "login_log.txt"
    os.mkfifo(log_path)
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(log_path)}) as server:
        status = server.process.wait(timeout=20)
    assert status != 0
    assert "is a FIFO that no process reads" in server.stderr


async def test_a_fifo_with_a_reader_is_a_log(make_app, log_path: Path) -> None:
    os.mkfifo(log_path)
    reader = os.open(log_path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        async with make_app().test_app() as test_app:
            assert (await test_app.test_client().get("/login/?username=piped")).status_code == 200
        assert os.read(reader, 4096).decode().startswith("登录日志:用户名:piped,")
    finally:
        os.close(reader)


async def test_durable_mode_syncs_the_directory_of_a_created_log(
    make_app, log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr("quart_app.stores.file._datasync", recording_fsync)
    app = make_app(LOGIN_LOG_DURABLE=True)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/login/?username=a")).status_code == 200
        assert synced == ["file", "dir"]
        assert (await client.get("/login/?username=b")).status_code == 200
        assert synced == ["file", "dir", "file"]  # the entry is on disk already
        log_path.unlink()  # removed: the next write creates it again
        assert (await client.get("/login/?username=c")).status_code == 200
        assert synced == ["file", "dir", "file", "file", "dir"]
    assert store_of(app).mode == 0o640


async def test_a_reader_holding_a_lock_on_the_log_stalls_nothing(make_app, log_path: Path) -> None:
    # Anyone who may read the log may flock it; the writers' lock is elsewhere.
    log_path.write_text("earlier\n")
    reader = os.open(log_path, os.O_RDONLY)
    fcntl.flock(reader, fcntl.LOCK_SH)
    try:
        async with asyncio.timeout(10), make_app().test_app() as test_app:
            client = test_app.test_client()
            assert (await client.get("/login/?username=unstalled")).status_code == 200
    finally:
        os.close(reader)
    assert log_path.read_text().splitlines()[1].startswith("登录日志:用户名:unstalled,")


async def test_a_batch_cut_short_by_a_full_disk_is_cut_back_and_another_process_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two stores on one file, as two workers have. The first gets half a line
    # out before the disk fills: it cuts it back and lets go of the lock, so
    # the second appends whole lines at once, and the first's retry follows.
    path = tmp_path / "log.txt"
    first, second = FileStore(str(path)), FileStore(str(path))
    await first.open()
    await second.open()
    room = [30]  # bytes left on the disk, for the first store's writes
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if fd == first._fd and room:
            if not room[0]:
                raise OSError(errno.ENOSPC, "No space left on device")
            taken, room[0] = real_write(fd, bytes(data[: room[0]])), 0
            return taken  # the kernel takes what fits
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    ours, theirs = records("first", 2), records("second", 2)
    batch = first.prepare(ours)
    with pytest.raises(OSError):
        await first.write(batch)
    assert path.read_bytes() == b"", "half a line left in the log"
    other = asyncio.create_task(second.write(second.prepare(theirs)))
    done, _ = await asyncio.wait({other}, timeout=2)
    room.clear()  # room again: the first store's batch goes out
    await first.write(batch)
    await asyncio.wait_for(other, 5)
    await first.close()
    await second.close()
    assert other in done, "the other process was kept waiting for a full disk"
    assert path.read_bytes() == text_lines(theirs + ours)


async def test_a_cut_back_that_fails_frees_the_lock_and_the_next_write_ends_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.txt"
    store = FileStore(str(path))
    await store.open()
    earlier, batch_records = records("earlier", 1), records("cut", 2)
    await store.write(store.prepare(earlier))
    real_write, written = os.write, [0]

    def failing_write(fd: int, data: bytes) -> int:
        if fd != store._fd:
            return real_write(fd, data)
        if written[0]:
            raise OSError(errno.EIO, "Input/output error")
        written[0] = real_write(fd, bytes(data[:30]))
        return written[0]

    def failing_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    batch = store.prepare(batch_records)
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", failing_write)
        patch.setattr(os, "ftruncate", failing_truncate)
        with pytest.raises(OSError):
            await store.write(batch)
    fragment = text_lines(batch_records)[:30]
    assert path.read_bytes() == text_lines(earlier) + fragment
    assert_lock_free(store)
    await store.write(batch)  # the disk works again
    await store.close()
    cut_short = fragment + CUT_SHORT.encode() + b"\n"
    assert path.read_bytes() == text_lines(earlier) + cut_short + text_lines(batch_records)


@pytest.mark.parametrize("then", ["killed", "rotated"])
async def test_a_store_that_waited_for_the_lock_checks_the_file_again_once_it_holds_it(
    tmp_path: Path, then: str
) -> None:
    # Another worker holds the lock with half a line written. This store,
    # between two batches, waits for the lock; then that worker is killed, or
    # the log is rotated before it lets go.
    path, rotated = tmp_path / "log.txt", tmp_path / "log.txt.1"
    store = FileStore(str(path))
    await store.open()
    earlier, batch_records = records("earlier", 1), records("next", 2)
    await store.write(store.prepare(earlier))
    holder = os.open(store.lock_path, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with path.open("ab") as log:
            log.write(FRAGMENT.encode())
        writing = asyncio.create_task(store.write(store.prepare(batch_records)))
        await until(
            lambda: writing.done() or os.getpid() in flock_pids(Path(store.lock_path))[1],
            "the store waiting for the lock",
        )
        if then == "rotated":
            path.rename(rotated)
    finally:
        os.close(holder)  # the holder dies, or lets go
    await asyncio.wait_for(writing, 5)
    await store.close()
    cut_short = text_lines(earlier) + (FRAGMENT + CUT_SHORT + "\n").encode()
    if then == "killed":
        assert path.read_bytes() == cut_short + text_lines(batch_records)
    else:
        assert rotated.read_bytes() == cut_short  # `cat log.1 log` glues nothing either
        assert path.read_bytes() == text_lines(batch_records)


async def test_a_lock_file_removed_between_batches_is_not_trusted(tmp_path: Path) -> None:
    # A cleaner removes .NAME.lock; a worker started since locks a new one.
    # A store still holding the old one must take the new one too, or both
    # append at once.
    path = tmp_path / "log.txt"
    store = FileStore(str(path))
    await store.open()
    os.unlink(store.lock_path)
    newer = FileStore(str(path))
    await newer.open()  # creates the lock file again
    holder = os.open(newer.lock_path, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # the new worker appending
        writing = asyncio.create_task(store.write(store.prepare(records("old", 1))))
        await until(
            lambda: writing.done() or os.getpid() in flock_pids(Path(newer.lock_path))[1],
            "the store waiting for the new lock",
        )
        assert not writing.done(), "appended without the lock the others take"
    finally:
        os.close(holder)
    await asyncio.wait_for(writing, 5)
    await store.close()
    await newer.close()
    assert path.read_bytes() == text_lines(records("old", 1))


async def test_durable_mode_syncs_a_file_rotated_away_between_two_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_sync = os.fdatasync

    def recording_sync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_sync(fd)

    monkeypatch.setattr("quart_app.stores.file._datasync", recording_sync)
    path = tmp_path / "log.txt"
    store = FileStore(str(path), durable=True)
    await store.open()
    records = [LoginRecord(f"r{i}", datetime.now(UTC), "192.0.2.1") for i in range(2)]
    await store.write(store.prepare(records[:1]))
    rotated = path.rename(tmp_path / "log.txt.1")
    await store.write(store.prepare(records[1:]))  # reopens: a new file
    await store.sync()
    await store.close()
    assert rotated.stat().st_ino in synced, "lines acknowledged without their fsync"
    assert path.stat().st_ino in synced


async def test_durable_mode_refuses_a_log_that_cannot_be_synced(make_app, log_path: Path) -> None:
    os.mkfifo(log_path)
    reader = os.open(log_path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(LifespanError, match="durable mode needs a regular file"):
            async with make_app(LOGIN_LOG_DURABLE=True).test_app():
                pass
    finally:
        os.close(reader)


async def test_two_workers_writing_to_a_slow_pipe_never_interleave_lines(tmp_path: Path) -> None:
    # A collector reading a FIFO slowly: the pipe is full, and a write larger
    # than PIPE_BUF would be split and mixed with the other worker's.
    fifo = tmp_path / "collector.fifo"
    os.mkfifo(fifo)
    received = bytearray()
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            try:
                chunk = os.read(reader, 4096)
            except BlockingIOError:
                chunk = b""
            received.extend(chunk)
            time.sleep(0.01)
        while chunk := os.read(reader, 1 << 16):
            received.extend(chunk)

    collector = threading.Thread(target=collect)
    collector.start()
    names = [f"pipe-{i:04d}-" + "x" * 200 for i in range(3000)]
    try:
        with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(fifo)}, workers=2) as server:
            run = await send_logins(server.url, names, concurrency=100)
            assert server.stop() == 0, server.stderr
    finally:
        stop.set()
        collector.join()
        os.close(reader)
    lines = received.decode().split("\n")
    assert lines.pop() == ""
    usernames = [parse_line(line).username for line in lines]
    assert sorted(usernames) == sorted(set(names) & set(usernames))
    assert set(run.acknowledged) <= set(usernames)


async def test_a_framer_appends_what_it_returns_from_the_writing_thread_with_the_lock_held(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.txt"
    path.write_bytes(FRAGMENT.encode())  # a torn line: ended before the framer sees the file
    ended = (FRAGMENT + CUT_SHORT + "\n").encode()
    seen: list[tuple[bytes, FileState, bytes, bool, bool, bool]] = []

    def framer(lines: bytes, state: FileState) -> bytes:
        probe = os.open(store.lock_path, os.O_RDONLY)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = False
        except BlockingIOError:
            locked = True
        finally:
            os.close(probe)
        ours = os.getpid() in flock_pids(Path(store.lock_path))[0]
        in_thread = threading.current_thread() is not threading.main_thread()
        seen.append((lines, state, state.read(0, state.size), locked, ours, in_thread))
        return b"# begin\n" + lines + b"# end\n"

    store = FileStore(str(path), framer=framer)
    batch = records("framed", 2)
    await store.open()
    await store.write(store.prepare(batch))
    await store.close()
    [(lines, state, before, locked, ours, in_thread)] = seen
    assert lines == text_lines(batch)  # the exact bytes the store would have appended
    assert state.size == len(ended) and before == ended
    assert state.identity == (path.stat().st_dev, path.stat().st_ino)
    assert locked and ours, "the framer ran without this process holding the lock"
    assert in_thread, "the framer ran on the event loop"
    assert path.read_bytes() == ended + b"# begin\n" + text_lines(batch) + b"# end\n"


async def test_two_workers_framers_each_see_the_file_as_their_bytes_find_it(
    tmp_path: Path,
) -> None:
    # Each batch is sealed with a hash of the whole file before its seal, as
    # read under the lock: with two stores on one file, as two workers have,
    # every seal still holds only if nothing came between the read and the append.
    def seal(lines: bytes, state: FileState) -> bytes:
        digest = hashlib.sha256(state.read(0, state.size) + lines).hexdigest()
        return lines + f"# sealed {digest}\n".encode()

    path = tmp_path / "log.txt"
    first, second = FileStore(str(path), framer=seal), FileStore(str(path), framer=seal)
    await first.open()
    await second.open()

    async def write(store: FileStore, tag: str) -> None:
        for i in range(20):
            await store.write(store.prepare(records(f"{tag}{i}", 3)))

    await asyncio.wait_for(asyncio.gather(write(first, "a"), write(second, "b")), 10)
    await first.close()
    await second.close()
    content = path.read_bytes()
    seals = [match.start() for match in re.finditer(rb"^# sealed ", content, re.MULTILINE)]
    assert len(seals) == 40
    for start in seals:
        digest = content[start:].split(b"\n", 1)[0].removeprefix(b"# sealed ").decode()
        assert hashlib.sha256(content[:start]).hexdigest() == digest
    logins = [line for line in content.decode().splitlines() if not line.startswith("# sealed")]
    assert sorted(parse_line(line).username for line in logins) == sorted(
        record.username for tag in "ab" for i in range(20) for record in records(f"{tag}{i}", 3)
    )


async def test_a_batch_that_failed_before_any_line_stayed_is_framed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []

    def framer(lines: bytes, state: FileState) -> bytes:
        sizes.append(state.size)
        return lines

    path = tmp_path / "log.txt"
    store, other = FileStore(str(path), framer=framer), FileStore(str(path))
    await store.open()
    await other.open()
    full = [OSError(errno.ENOSPC, "No space left on device")]
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if fd == store._fd and full:
            raise full.pop()
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    ours, theirs = records("ours", 2), records("theirs", 1)
    batch = store.prepare(ours)
    with pytest.raises(OSError):
        await store.write(batch)
    await other.write(other.prepare(theirs))  # another worker appends meanwhile
    await store.write(batch)
    await store.close()
    await other.close()
    assert sizes == [0, len(text_lines(theirs))]
    assert path.read_bytes() == text_lines(theirs + ours)


async def test_a_framer_returning_part_of_a_line_fails_the_batch_and_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.txt"
    store = FileStore(str(path), framer=lambda lines, state: lines + b"# no newline")
    await store.open()
    with pytest.raises(ValueError, match="framer must return whole lines"):
        await store.write(store.prepare(records("torn", 1)))
    assert_lock_free(store)
    await store.close()
    assert path.read_bytes() == b""


async def test_a_framed_log_refuses_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        store = FileStore(str(fifo), framer=lambda lines, state: lines)
        with pytest.raises(LogPathError, match="a framed log needs a regular file"):
            await store.open()
    finally:
        os.close(reader)
