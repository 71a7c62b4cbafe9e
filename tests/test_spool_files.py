"""The spool's record format and its directory: framing, damage, binding, refusals."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from quart_app.records import LoginRecord
from quart_app.spool.directory import SpoolDirectory, SpoolDirError
from quart_app.spool.frames import MAGIC, frame, header_frame, record_frames, scan, summary
from quart_app.spool.store import server_settings

BINDING = {"database": "127.0.0.1:5432/audit", "table": "login_log", "host": "web-1"}
NAMES = ["张三", "o'brien", "a,b\\c", "👩‍💻", "x" * 320]


def records() -> list[LoginRecord]:
    now = datetime(2026, 12, 6, 7, 0, 0, 123456, tzinfo=UTC)
    ips = ["192.0.2.1", "2001:db8::1", "-", "::ffff:192.0.2.9", "203.0.113.7"]
    return [LoginRecord(name, now, ip) for name, ip in zip(NAMES, ips, strict=True)]


def spool_bytes(maybe: list[bool] | None = None) -> tuple[bytes, list]:
    rows = records()
    ids = [uuid4() for _ in rows]
    frames = record_frames(rows, ids, "web-1", maybe or [False] * len(rows))
    return header_frame(BINDING) + b"".join(frames), ids


def test_records_read_back_exactly_with_their_ids_host_and_marks() -> None:
    data, ids = spool_bytes([False, True, False, True, False])
    found = scan(data)
    assert found.header == {"format": 1, **BINDING}
    assert [item.record for item in found.records] == records()
    assert [item.id for item in found.records] == ids
    assert {item.host for item in found.records} == {"web-1"}
    assert [item.maybe_stored for item in found.records] == [False, True, False, True, False]
    assert (found.torn, found.damaged) == (0, [])


@pytest.mark.parametrize("cut", [1, 5, 12, 20])
def test_a_record_cut_short_at_the_end_is_torn_and_the_rest_is_read(cut: int) -> None:
    data, _ = spool_bytes()
    found = scan(data[:-cut])
    assert [item.record for item in found.records] == records()[:-1]
    last = len(record_frames(records()[-1:], [uuid4()], "web-1", [False])[0])
    assert found.torn == last - cut
    assert found.damaged == []


def test_a_damaged_record_in_the_middle_is_kept_aside_and_those_after_it_are_read() -> None:
    data, _ = spool_bytes()
    second = data.index(MAGIC, data.index(MAGIC, len(header_frame(BINDING))) + 1)
    damaged = bytearray(data)
    damaged[second + 30] ^= 0xFF  # in the second record's payload
    found = scan(bytes(damaged))
    assert [item.record.username for item in found.records] == [NAMES[0], *NAMES[2:]]
    assert len(found.damaged) == 1
    offset, piece = found.damaged[0]
    assert offset == second and bytes(damaged).find(piece) == second
    assert found.torn == 0


def test_a_damaged_length_does_not_swallow_the_records_after_it() -> None:
    data, _ = spool_bytes()
    first = data.index(MAGIC, len(header_frame(BINDING)))
    damaged = bytearray(data)
    damaged[first + 4 : first + 8] = (1 << 31).to_bytes(4, "big")  # a length past the end
    found = scan(bytes(damaged))
    assert [item.record.username for item in found.records] == NAMES[1:]
    assert [offset for offset, _ in found.damaged] == [first]


def test_a_file_of_garbage_is_kept_aside_whole_never_dropped_as_torn() -> None:
    found = scan(b"\x00" * 100)
    assert (found.records, found.damaged, found.torn) == ([], [(0, b"\x00" * 100)], 0)


def test_a_tail_longer_than_any_record_is_damage_not_a_tear() -> None:
    data, _ = spool_bytes()
    found = scan(data + b"\x00" * 70_000)
    assert [item.record for item in found.records] == records()
    assert [(offset, len(piece)) for offset, piece in found.damaged] == [(len(data), 70_000)]
    assert found.torn == 0


def bound(path: Path, binding: dict[str, str] | None = None, max_bytes: int = 1 << 20):
    directory = SpoolDirectory(str(path), binding or BINDING, max_bytes)
    directory.open()
    return directory


def test_a_directory_is_bound_to_its_table_and_another_table_is_refused_while_files_wait(
    tmp_path: Path,
) -> None:
    directory = bound(tmp_path)
    name, fd, _ = directory.create("0001-1-000001")
    os.close(fd)
    directory.close()
    other = {**BINDING, "table": "other_log"}
    with pytest.raises(SpoolDirError) as refused:
        bound(tmp_path, other)
    assert "holds records spooled for the table login_log at 127.0.0.1:5432/audit" in str(
        refused.value
    )
    os.unlink(tmp_path / name)
    bound(tmp_path, other).close()  # nothing waits: bound anew
    assert json.loads((tmp_path / "spool.json").read_text())["table"] == "other_log"


def test_another_app_using_the_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("quart_app.spool.directory.BIND_WAIT", 0.2)
    directory = bound(tmp_path)
    with pytest.raises(SpoolDirError, match="another app of this process uses it"):
        bound(tmp_path)
    directory.close()
    # Another process, spooling for another table: it holds spool.json shared.
    (tmp_path / "spool.json").write_text(json.dumps({**BINDING, "table": "theirs"}))
    fd = os.open(tmp_path / "spool.json", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        with pytest.raises(
            SpoolDirError, match="another app uses it, spooling for the table theirs"
        ):
            bound(tmp_path)
    finally:
        os.close(fd)
    bound(tmp_path).close()


@pytest.mark.parametrize("fault", ["missing", "a file", "through a symlink"])
def test_a_directory_that_cannot_be_used_is_refused_saying_why(tmp_path: Path, fault: str) -> None:
    path = tmp_path / "spool"
    expected = {
        "missing": "No such file or directory: create it (mode 0700) first",
        "a file": "it is not a directory",
        "through a symlink": "its path goes through a symbolic link; give the real path",
    }[fault]
    if fault == "a file":
        path.write_text("")
    elif fault == "through a symlink":
        (tmp_path / "real").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "real")
        path = tmp_path / "link" / "spool"
        path.mkdir()
    with pytest.raises(SpoolDirError) as refused:
        bound(path)
    assert str(refused.value) == f"cannot use the spool directory {path}: {expected}"


def test_a_file_being_created_is_never_adopted_and_a_dead_ones_is_removed(tmp_path: Path) -> None:
    directory = bound(tmp_path)
    name, fd, size = directory.create("0001-1-000001")
    assert directory.adopt(name) is None  # locked by its live writer
    os.close(fd)  # its writer died
    adopted = directory.adopt(name)
    assert adopted is not None and os.fstat(adopted).st_size == size
    leftover = tmp_path / ".new-0123"
    leftover.write_bytes(b"")
    assert directory.leftovers() == [".new-0123"]
    assert directory.adopt(".new-0123") is None and not leftover.exists()
    directory.close()


@pytest.mark.parametrize("binding_file", ["lost", "garbage"])
def test_records_for_another_table_are_refused_even_when_the_binding_file_is_lost(
    tmp_path: Path, binding_file: str
) -> None:
    directory = bound(tmp_path)
    _, fd, _ = directory.create("0001-1-000001")
    os.close(fd)
    directory.close()
    if binding_file == "lost":
        (tmp_path / "spool.json").unlink()
    else:
        (tmp_path / "spool.json").write_bytes(b"\x00garbage")
    with pytest.raises(SpoolDirError) as refused:
        bound(tmp_path, {**BINDING, "table": "other_log"})
    assert "holds records spooled for the table login_log at 127.0.0.1:5432/audit" in str(
        refused.value
    )
    bound(tmp_path).close()  # the table its files were spooled for: taken, bound again
    assert json.loads((tmp_path / "spool.json").read_text()) == BINDING


@pytest.mark.parametrize("kind", ["a directory", "a symlink", "a FIFO"])
def test_something_not_a_file_named_like_a_spool_file_is_passed_over(
    tmp_path: Path, kind: str
) -> None:
    directory = bound(tmp_path)
    stray = tmp_path / "0000-1-000001.seg"
    if kind == "a directory":
        stray.mkdir()
    elif kind == "a symlink":
        (tmp_path / "elsewhere").write_bytes(b"")
        stray.symlink_to(tmp_path / "elsewhere")
    else:
        os.mkfifo(stray)
    name, fd, _ = directory.create("0001-1-000002")
    os.close(fd)
    assert directory.segment_names() == [name]
    assert directory.adopt(stray.name) is None
    assert directory.adopt(name) is not None
    directory.close()


def test_a_file_being_created_survives_another_process_clearing_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = bound(tmp_path)
    real_open = os.open

    def open_then_clear(path, flags, *args):
        fd = real_open(path, flags, *args)
        if os.path.basename(path).startswith(".new-"):
            # Another worker, between this one's open and its lock, takes it for a dead one's.
            monkeypatch.setattr(os, "open", real_open)
            assert directory.adopt(os.path.basename(path)) is None
        return fd

    monkeypatch.setattr(os, "open", open_then_clear)
    name, fd, size = directory.create("0001-1-000001")
    assert (tmp_path / name).stat().st_size == size and os.fstat(fd).st_nlink == 1
    os.close(fd)
    directory.close()


def test_a_damaged_directory_that_is_a_file_is_refused_saying_why(tmp_path: Path) -> None:
    (tmp_path / "damaged").write_text("")
    with pytest.raises(SpoolDirError) as refused:
        bound(tmp_path)
    assert str(refused.value).endswith(
        "damaged is not a directory: it must be one, for the pieces of damaged spool files"
    )


def test_removing_a_spool_file_someone_deleted_already_counts_as_removed(tmp_path: Path) -> None:
    directory = bound(tmp_path)
    name, fd, _ = directory.create("0001-1-000001")
    (tmp_path / name).unlink()
    directory.remove(name, fd)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
    directory.close()


def bad_frames() -> dict[str, bytes]:
    """Frames whose checksum holds and whose content no record has."""
    good = record_frames(records()[:1], [uuid4()], "web-1", [False])[0]
    payload = good[12:]
    return {
        "kind": frame(b"X" + payload[1:]),
        "short": frame(payload[:20]),
        "address": frame(payload[:28] + b"\xff" + payload[29:]),
        "time": frame(payload[:17] + (2**63 - 1).to_bytes(8, "big") + payload[25:]),
        "host": record_frames(records()[:1], [uuid4()], "web-2", [False])[0],
    }


@pytest.mark.parametrize("kind", ["kind", "short", "address", "time", "host"])
@pytest.mark.parametrize("where", ["first", "last"])
def test_a_whole_frame_no_record_could_be_is_damage_never_a_tear(kind: str, where: str) -> None:
    data, _ = spool_bytes()
    header = header_frame(BINDING)
    bad = bad_frames()[kind]
    if where == "first":
        spooled = header + bad + data[len(header) :]
        offset = len(header)
    else:
        spooled, offset = data + bad, len(data)
    found = scan(spooled, "web-1")
    assert [item.record for item in found.records] == records()
    assert found.damaged == [(offset, bad)] and found.torn == 0
    # Counted by lengths, found when read; a first record that cannot be read is read whole.
    counted = len(records()) + (0 if where == "first" and kind != "host" else 1)
    assert summary(spooled)[0] == counted


@pytest.mark.parametrize("name", ["rejected.jsonl", "damaged"])
def test_a_fifo_where_the_spool_keeps_records_aside_is_refused_not_waited_on(
    tmp_path: Path, name: str
) -> None:
    directory = bound(tmp_path)
    if name == "damaged":
        os.mkfifo(tmp_path / "damaged" / "0001-1-000001.seg.0")
        keep = lambda: directory.move_aside("0001-1-000001.seg", 0, b"x")  # noqa: E731
    else:
        os.mkfifo(tmp_path / name)
        keep = lambda: directory.reject([{"id": "1"}])  # noqa: E731
    failures: list[BaseException] = []

    def attempt() -> None:
        try:
            keep()
        except OSError as exc:
            failures.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "it waits for a reader of the FIFO"
    assert len(failures) == 1
    directory.close()


def test_the_binding_holds_the_settings_that_may_change_which_table_a_name_is() -> None:
    url = "postgresql://app@db/audit?search_path=s1&password=secret&sslmode=require&options=-c%20x"
    assert server_settings(url) == "options=-c x&search_path=s1"
    assert server_settings("postgresql://app@db/audit?service=prod") == "service=prod"
    assert server_settings("postgresql://app@db/audit") == ""
