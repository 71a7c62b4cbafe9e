"""Sealing under faults, in process: a full disk, key changes a crash interrupts, and the
first key used once and gone."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quart_app.records import LoginRecord
from quart_app.seal import keys
from quart_app.seal.note import Signer
from quart_app.seal.store import SealedStore
from quart_app.stores.file import FileStore

from helpers.disk import fill
from helpers.seal import Sealed, make_key, seal_batches


def batch_of(store: SealedStore, prefix: str, count: int = 5) -> object:
    return store.prepare(
        [LoginRecord(f"{prefix}-{i}", datetime.now(UTC), "1.2.3.4") for i in range(count)]
    )


async def test_a_full_disk_delays_seals_leaves_no_half_checkpoint_and_loses_nothing(
    small_disk: Callable[[str], Path], tmp_path: Path
) -> None:
    disk = small_disk("256k")
    key, public = make_key(tmp_path / "keys")
    sealed = Sealed(key, public, disk / "login_log.txt")
    store = SealedStore(FileStore(str(sealed.log)), str(key), interval=0.01, epoch=0.05)
    await store.open()
    for number in range(5):
        await store.write(batch_of(store, f"before{number}"))
        await asyncio.sleep(0.02)
    filler = fill(disk)
    waiting = []
    for number in range(30):  # the log, the seal file and the sealer all meet ENOSPC
        batch = batch_of(store, f"full{number}")
        try:
            await store.write(batch)
        except OSError:
            waiting.append(batch)
        await asyncio.sleep(0.01)
    assert waiting, "the disk never filled"
    filler.unlink()
    for batch in waiting:  # retried as the writer retries: the same batch, until it is in
        await store.write(batch)
    for number in range(5):
        await store.write(batch_of(store, f"after{number}"))
        await asyncio.sleep(0.02)
    await store.close()

    names = [line.split(b",")[0].split(b":")[-1] for line in sealed.lines()]
    assert len(names) == len(set(names)) == 5 * 5 + 30 * 5 + 5 * 5
    ran = sealed.verify()
    assert ran.status == 0, ran.out
    assert "OK: every line is as sealed" in ran.out


async def test_a_checkpoint_cut_short_by_a_full_disk_never_verifies(tmp_path: Path) -> None:
    key, public = make_key(tmp_path / "keys")
    sealed = Sealed(key, public, tmp_path / "login_log.txt")
    await seal_batches(sealed, [["a", "b"], ["c", "d"]])
    records = sealed.records()
    last = records[-1]
    for cut in (10, len(last) // 2, len(last) - 3):
        sealed.seal.write_text("".join(r + "\n" for r in records[:-1]) + last[:cut])
        # The append after a full disk ends the torn record first: it is then a damaged line.
        with sealed.seal.open("a") as seal:
            seal.write("\n")
        ran = sealed.verify()
        assert "Traceback" not in ran.err
        assert ran.status == 1, ran.out
        assert "1 damaged line(s) of the seal file after its last key change" in ran.out


@pytest.mark.parametrize("crash", ["before-certified", "after-certified"])
async def test_a_key_change_a_crash_interrupts_leaves_a_usable_key_and_a_whole_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: str
) -> None:
    key, public = make_key(tmp_path / "keys")
    sealed = Sealed(key, public, tmp_path / "login_log.txt")
    await seal_batches(sealed, [["a", "b"], ["c", "d"]], epoch=3600)

    class Crash(Exception):
        pass

    def crashing(path: str) -> None:
        raise Crash

    store = SealedStore(FileStore(str(sealed.log)), str(key), interval=3600, epoch=3600)
    await store.open()
    await store.write(batch_of(store, "mid"))
    target = "write_next" if crash == "before-certified" else "commit_next"
    if target == "write_next":
        original = keys.write_next

        def half_written(path: str, signer: Signer, log_path: str) -> None:
            original(path, signer, log_path)
            raise Crash

        monkeypatch.setattr(keys, "write_next", half_written)
    else:
        monkeypatch.setattr(keys, "commit_next", crashing)
    with pytest.raises(Crash):
        store.sealer.change_key("epoch", 0.0)
    monkeypatch.undo()
    assert Path(f"{key}.next").exists()
    # The process dies here: no clean stop. The next start finds one key usable.
    store.sealer.close()
    await store.file.close()
    await seal_batches(sealed, [["e", "f"]])
    assert not Path(f"{key}.next").exists()
    ran = sealed.verify()
    assert ran.status == 0, ran.out


async def test_the_first_key_signs_once_and_is_gone_from_its_file(tmp_path: Path) -> None:
    key, public = make_key(tmp_path / "keys")
    first = key.read_text()
    sealed = Sealed(key, public, tmp_path / "login_log.txt")
    await seal_batches(sealed, [["a"], ["b"]])
    assert key.read_text() != first
    seed = first.strip().split("+", 4)[4]  # PRIVATE+KEY+NAME+HASH+DATA
    for path in key.parent.iterdir():
        assert seed not in path.read_text(errors="replace"), path
    assert base64.b64decode(seed)  # the check above looked for something real
    assert sorted(p.name for p in key.parent.iterdir()) == ["key", "key.pub"]


async def test_a_key_that_sealed_one_log_is_refused_for_another(tmp_path: Path) -> None:
    key, public = make_key(tmp_path / "keys")
    await seal_batches(Sealed(key, public, tmp_path / "first.txt"), [["a"]])
    other = SealedStore(FileStore(str(tmp_path / "second.txt")), str(key))
    with pytest.raises(keys.KeyFileError) as refused:
        await other.open()
    assert f"it has sealed {tmp_path / 'first.txt'} already" in str(refused.value)
    assert "each log needs a key of its own" in str(refused.value)
    assert not (tmp_path / "second.txt").exists()


async def test_the_log_replaced_by_a_copy_of_itself_is_the_same_file_running_or_not(
    tmp_path: Path,
) -> None:
    key, public = make_key(tmp_path / "keys")
    sealed = Sealed(key, public, tmp_path / "login_log.txt")

    def copied_over(index: int) -> None:
        if index in (2, 5):  # an editor's save: the same lines, another file, renamed over
            copy = tmp_path / "copy"
            copy.write_bytes(sealed.log.read_bytes())
            copy.rename(sealed.log)

    await seal_batches(
        sealed, [[f"a{b}-{i}" for i in range(3)] for b in range(8)], between=copied_over
    )
    ran = sealed.verify()
    assert ran.status == 0, ran.out
    # Stopped, copied back (a restore), started twice: still the one file.
    copy = tmp_path / "copy"
    copy.write_bytes(sealed.log.read_bytes())
    copy.rename(sealed.log)
    await seal_batches(sealed, [["b1"]])
    await seal_batches(sealed, [["b2"]])
    ran = sealed.verify()
    assert ran.status == 0, ran.out
    assert "26 line(s), sealed up to line 26" in ran.out
    assert sum(r.startswith("M ") for r in sealed.records()) == 3


async def test_a_line_torn_by_a_crash_is_ended_at_start_and_sealed_as_written(
    tmp_path: Path,
) -> None:
    key, public = make_key(tmp_path / "keys")
    sealed = Sealed(key, public, tmp_path / "login_log.txt")
    store = SealedStore(FileStore(str(sealed.log)), str(key), interval=3600, epoch=3600)
    await store.open()
    await store.write(batch_of(store, "before"))
    store.sealer.close()  # killed: no clean stop
    await store.file.close()
    with sealed.log.open("ab") as log:
        log.write("登录日志:用户名:half".encode())  # a write(2) cut short by the kill
    await seal_batches(sealed, [["after"]])
    assert sealed.lines()[5] == "登录日志:用户名:half (cut short)".encode()
    ran = sealed.verify()
    assert ran.status == 0, ran.out
    assert "7 line(s), sealed up to line 7" in ran.out
