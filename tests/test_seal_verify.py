"""``quart-app-log verify`` on a log sealed in process: a clean log verifies; each tampering
is caught with exit 1, naming where; hostile seal files never crash it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from pathlib import Path

import pytest

from quart_app.seal.certs import Checkpoint, records_digest
from quart_app.seal.merkle import CompactRange, leaf_hash
from quart_app.seal.note import Signer
from quart_app.seal.sidecar import one_line

from helpers.seal import Sealed, make_key, make_sealed, rehash, resign, seal_batches
from helpers.trail import run_log


@pytest.fixture
def sealed(tmp_path: Path) -> Sealed:
    return make_sealed(tmp_path)


def assert_fails(sealed: Sealed, *expected: str, logs: tuple[Path | str, ...] = ()) -> str:
    ran = sealed.verify(*logs)
    assert ran.status == 1, ran.out + ran.err
    assert "Traceback" not in ran.err, ran.err
    assert "NOT VERIFIED" in ran.out
    for text in expected:
        assert text in ran.out, ran.out
    return ran.out


def test_a_clean_log_verifies_and_says_what_was_proved(sealed: Sealed) -> None:
    ran = sealed.verify()
    assert ran.status == 0, ran.out + ran.err
    assert f"{sealed.log}: 48 line(s) read" in ran.out
    assert "48 line(s), sealed up to line 48 by" in ran.out
    assert ran.out.endswith("OK: every line is as sealed\n")


def test_a_changed_line_is_named_by_file_and_line(sealed: Sealed) -> None:
    lines = sealed.lines()
    lines[9] = lines[9].replace(b"user-2-1", b"user-2-X")
    sealed.write_lines(lines)
    assert_fails(sealed, f"FAILED: {sealed.log} line 10: not the line sealed")


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (lambda lines: lines.pop(20), 21),  # removed
        (lambda lines: lines.insert(30, lines[0]), 31),  # added
        (lambda lines: lines.insert(5, lines.pop(6)), 6),  # two lines swapped
    ],
    ids=["removed", "added", "reordered"],
)
def test_a_removed_added_or_reordered_line_is_named(sealed: Sealed, change, line: int) -> None:
    lines = sealed.lines()
    change(lines)
    sealed.write_lines(lines)
    assert_fails(sealed, f"{sealed.log} line {line:,}: not the line sealed")


def test_a_cut_tail_fails(sealed: Sealed) -> None:
    sealed.write_lines(sealed.lines()[:-3])
    assert_fails(sealed, "cut short: it ends at line 45")


def test_a_line_added_after_the_clean_stop_fails(sealed: Sealed) -> None:
    sealed.write_lines([*sealed.lines(), sealed.lines()[-1]])
    assert_fails(sealed, "1 line(s) after line 48 follow the clean stop's seal")


def test_a_log_changed_with_its_seal_file_names_the_range_between_checkpoints(
    sealed: Sealed,
) -> None:
    lines = sealed.lines()
    lines[9] = lines[9].replace(b"user-2-1", b"user-2-X")
    sealed.write_lines(lines)
    rehash(sealed)
    out = assert_fails(sealed, "do not match the")
    assert "(the log and its seal file were both changed)" in out
    assert "line 10: not the line sealed" not in out


def test_a_reseal_with_another_key_fails(sealed: Sealed) -> None:
    # Root on the host, without the key's history: a new key signs a whole new chain.
    lines = sealed.lines()
    lines[0] = lines[0].replace(b"user-0-0", b"mallory")
    sealed.write_lines(lines)
    rehash(sealed)
    records = [r for r in sealed.records() if r[:2] not in ("C ", "K ")]
    tree = CompactRange()
    for line in sealed.lines():
        tree.append_hash(leaf_hash(line))
    other = Signer.generate("test/login-log")
    origin = records[1].split(" ")[1]
    nothing = records_digest().digest()
    start = Checkpoint(origin, 0, CompactRange().root(), other.verifier.encoded(), "start", nothing)
    records.append(f"K {one_line(other.sign(start.text()))}")
    records.append(f"C {one_line(other.sign(Checkpoint(origin, tree.size, tree.root()).text()))}")
    sealed.seal.write_text("".join(r + "\n" for r in records))
    assert_fails(sealed, "that no key of the chain signed")


def test_a_compromise_at_t_cannot_reseal_lines_sealed_before_its_epoch(tmp_path: Path) -> None:
    key, public = make_key(tmp_path / "keys")
    sealed = Sealed(key, public, tmp_path / "login_log.txt")
    stolen: list[Signer] = []

    def steal(index: int) -> None:
        if index == 7:  # the key state at T, as an attacker who took the host copies it
            stolen.append(Signer.parse(key.read_text().split("\n")[0]))

    names = [[f"user-{b}-{i}" for i in range(4)] for b in range(12)]
    asyncio.run(seal_batches(sealed, names, between=steal))
    assert sealed.verify().status == 0
    # Later, with the stolen key: line 3 (sealed long before T) changed, the seal file's
    # hashes made to match, and everything the stolen key signed signed again.
    lines = sealed.lines()
    lines[2] = lines[2].replace(b"user-0-2", b"mallory")
    sealed.write_lines(lines)
    rehash(sealed)
    assert resign(sealed, stolen[0]) > 0
    out = assert_fails(sealed)
    assert "OK" not in out


def test_an_old_checkpoint_signed_again_with_a_newer_key_fails(sealed: Sealed) -> None:
    # Root on the stopped host holds the current key (certified from line 48): it signs a
    # checkpoint of the first 4 lines, as if it were an old one.
    current = Signer.parse(sealed.key.read_text().split("\n")[0])
    tree = CompactRange()
    for line in sealed.lines()[:4]:
        tree.append_hash(leaf_hash(line))
    origin = sealed.records()[1].split(" ")[1]
    note = current.sign(Checkpoint(origin, 4, tree.root()).text())
    with sealed.seal.open("a") as seal:
        seal.write(f"C {one_line(note)}\n")
    assert_fails(
        sealed, "signed by a key certified only from line 48", "re-sealed with a newer key"
    )


def test_a_checkpoint_changed_inside_an_epoch_is_caught_by_the_next_key_change(
    sealed: Sealed,
) -> None:
    records = sealed.records()
    at = next(i for i, r in enumerate(records) if r.startswith("C "))
    records[at] = records[at][:-8] + ("AAAAAAA=" if records[at][-8:] != "AAAAAAA=" else "BBBBBBB=")
    sealed.seal.write_text("".join(r + "\n" for r in records))
    assert_fails(sealed, "are not those its key signed (changed, added or removed)")


def test_a_removed_key_change_breaks_the_chain(sealed: Sealed) -> None:
    records = sealed.records()
    at = [i for i, r in enumerate(records) if r.startswith("K ")][2]
    del records[at]
    sealed.seal.write_text("".join(r + "\n" for r in records))
    assert_fails(sealed, "that no key of the chain signed")


def test_a_log_never_sealed_fails(tmp_path: Path) -> None:
    _, public = make_key(tmp_path / "keys")
    log = tmp_path / "login_log.txt"
    log.write_text("登录日志:用户名:a,登录时间:2026-12-01 00:00:00+00:00,ip地址:1.2.3.4\n")
    ran = run_log("verify", "--key", public, log)
    assert ran.status == 1
    assert "the log was never sealed?" in ran.out


def test_a_log_cut_with_its_seal_file_verifies_alone_but_not_against_a_copy(
    sealed: Sealed, tmp_path: Path
) -> None:
    records = sealed.records()
    copies = tmp_path / "journal.txt"
    copies.write_text(
        "".join(f"Dec 06 web1 hypercorn[42]: login-log-checkpoint {r.split(' ')[1]}\n"
                for r in records if r[:2] in ("C ", "K "))
    )  # fmt: skip
    # Cut both after the sixth L record: a shorter log, consistent with itself.
    at = [i for i, r in enumerate(records) if r.startswith("L ")][5]
    end = int(records[at].split(" ")[2])
    kept = [r for r in records[: at + 1]]
    kept += [r for r in records[at + 1 : at + 8] if r[:2] in ("C ", "K ") and
             int(base64.b64decode(r.split(" ")[1]).decode().split("\n")[1]) <= 24]  # fmt: skip
    sealed.seal.write_text("".join(r + "\n" for r in kept))
    with sealed.log.open("r+b") as log:
        log.truncate(end)
    alone = sealed.verify()
    assert alone.status == 0, alone.out
    ran = sealed.verify(sealed.log, extra=("--checkpoint", str(copies)))
    assert ran.status == 1, ran.out
    assert "FAILED: the log does not reach a checkpoint held elsewhere: 48 lines" in ran.out


def test_a_whole_log_verifies_against_every_copy_of_its_checkpoints(
    sealed: Sealed, tmp_path: Path
) -> None:
    copies = tmp_path / "journal.txt"
    copies.write_text(
        "".join(f"login-log-checkpoint {r.split(' ')[1]}\n"
                for r in sealed.records() if r[:2] in ("C ", "K "))
    )  # fmt: skip
    ran = sealed.verify(sealed.log, extra=("--checkpoint", str(copies)))
    assert ran.status == 0, ran.out
    assert "checkpoint(s) held elsewhere checked" in ran.out
    # A copy changed in transit, or of another log, is not taken on trust.
    note = base64.b64decode(sealed.records()[-1].split(" ")[1]).decode()
    forged = tmp_path / "forged.txt"
    forged.write_text(note.replace("\n48\n", "\n47\n"))
    ran = sealed.verify(sealed.log, extra=("--checkpoint", str(forged)))
    assert ran.status == 1
    assert "signed by no key of this log's chain" in ran.out


@pytest.mark.parametrize(
    "junk",
    [
        b"\x00\xff" * 5000 + b"\n",
        b"L 0 10 " + b"A" * 10_000_000 + b"\n",
        b"C \xff\xfe\n",
        b"C "
        + base64.b64encode(b"x/1\n9223372036854775808\n" + b"A" * 44 + b"\n\n\xe2\x80\x94 k AAAA\n")
        + b"\n",
        b"K " + base64.b64encode("o\n1\nAAAA\n\n— test/login-log AAA".encode()) + b"\n",
        b"B {not json\n",
        b"F 99999999999999999999 1:2\n",
    ],
    ids=[
        "binary",
        "huge-line",
        "invalid-utf8",
        "size-2^63",
        "truncated-signature",
        "bad-json",
        "huge-number",
    ],
)
def test_hostile_seal_files_are_reported_never_a_crash(sealed: Sealed, junk: bytes) -> None:
    with sealed.seal.open("ab") as seal:
        seal.write(junk)
    ran = sealed.verify()
    assert "Traceback" not in ran.err, ran.err
    # Nothing vouches for a line after the last key change: junk there fails.
    assert ran.status == 1, ran.out + ran.err
    assert "NOT VERIFIED" in ran.out


def test_junk_instead_of_a_seal_file_fails(sealed: Sealed) -> None:
    sealed.seal.write_bytes(b"\x7fELF\x00" * 1000)
    assert_fails(sealed, "is not a seal file")


def test_a_huge_line_in_the_log_is_hashed_as_it_streams(sealed: Sealed) -> None:
    with sealed.log.open("ab") as log:
        log.write(b"x" * (100 << 20) + b"\n")
    assert_fails(sealed, "follow the clean stop's seal")


def test_usage_errors_exit_2(sealed: Sealed, tmp_path: Path) -> None:
    assert run_log("verify", sealed.log).status == 2  # no --key
    missing = run_log("verify", "--key", sealed.public, tmp_path / "nope.txt")
    assert missing.status == 2
    assert "cannot be read" in missing.err
    bad_key = run_log("verify", "--key", "junk+12345678+AAAA", sealed.log)
    assert bad_key.status == 2
    assert "not a verifier key" in bad_key.err


def test_a_foreign_key_fails(sealed: Sealed, tmp_path: Path) -> None:
    _, other = make_key(tmp_path / "other")
    ran = run_log("verify", "--key", other, sealed.log)
    assert ran.status == 1
    assert "that no key of the chain signed" in ran.out


def test_a_copy_of_the_log_verifies(sealed: Sealed, tmp_path: Path) -> None:
    # Copied elsewhere (another machine): identities differ, content is what counts.
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(sealed.log, copy / "login_log.txt")
    shutil.copy(sealed.seal, copy / "login_log.txt.seal")
    ran = run_log("verify", "--key", sealed.public, copy / "login_log.txt")
    assert ran.status == 0, ran.out


def test_a_line_and_its_records_forged_after_a_clean_stop_fail(sealed: Sealed) -> None:
    # Write access to the log and its seal file, not the key: a line, its leaf hash and
    # a start record, as a restarted app would write them, but no checkpoint.
    line = "登录日志:用户名:mallory,登录时间:2026-12-06 04:49:20+00:00,ip地址:10.6.6.6".encode()
    size, end = len(sealed.lines()), sealed.log.stat().st_size + len(line) + 1
    with sealed.log.open("ab") as log:
        log.write(line + b"\n")
    with sealed.seal.open("a") as seal:
        seal.write(f"S 1\nL {size} {end} {base64.b64encode(leaf_hash(line)).decode()}\n")
    assert_fails(sealed, "1 line(s) after the clean stop at line 48", "sealed by no checkpoint")


def test_a_last_line_without_its_newline_fails_once_the_app_is_stopped(sealed: Sealed) -> None:
    with sealed.log.open("ab") as log:
        log.write("登录日志:用户名:mallory".encode())
    assert_fails(sealed, "follow the clean stop's seal")


def test_hostile_records_that_once_raised_are_reported(sealed: Sealed, tmp_path: Path) -> None:
    current = Signer.parse(sealed.key.read_text().split("\n")[0])
    origin = sealed.records()[1].split(" ")[1]
    huge = f"{origin}\n{'9' * 5000}\n{base64.b64encode(bytes(32)).decode()}\n"
    with sealed.seal.open("a") as seal:
        seal.write(f"C {one_line(current.sign(huge))}\n")
        seal.write("B " + "[" * 100_000 + "\n")
    ran = sealed.verify()
    assert ran.status == 1, ran.out
    assert "Traceback" not in ran.err, ran.err
    copy = tmp_path / "copy.txt"
    copy.write_text(current.sign(huge))
    ran = sealed.verify(sealed.log, extra=("--checkpoint", str(copy)))
    assert ran.status == 1 and "Traceback" not in ran.err, ran.err
    broken = tmp_path / "login_log.txt.1.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00" + b"junk" * 100)
    ran = sealed.verify(broken, sealed.log)
    assert ran.status == 1 and "Traceback" not in ran.err, ran.err
    assert "cannot be read to its end" in ran.out


def test_a_device_or_fifo_given_is_refused_not_read_for_ever(
    sealed: Sealed, tmp_path: Path
) -> None:
    os.mkfifo(tmp_path / "fifo")
    for argv in (
        ("verify", "--key", "/dev/zero", sealed.log),
        ("verify", "--key", sealed.public, "/dev/zero", sealed.log),
        ("verify", "--key", sealed.public, sealed.log, "--checkpoint", tmp_path / "fifo"),
    ):
        ran = run_log(*argv, timeout=20)
        assert ran.status == 2, (argv, ran.out, ran.err)
        assert "not a regular file" in ran.err


def test_copies_in_a_journal_s_json_export_are_read(sealed: Sealed, tmp_path: Path) -> None:
    export = tmp_path / "journal.json"
    export.write_text(
        "".join(json.dumps({"MESSAGE": f"login-log-checkpoint {r.split(' ')[1]}"}) + "\n"
                for r in sealed.records() if r[:2] in ("C ", "K "))
    )  # fmt: skip
    ran = sealed.verify(sealed.log, extra=("--checkpoint", str(export)))
    assert ran.status == 0, ran.out
    assert "checkpoint(s) held elsewhere checked" in ran.out


def test_an_empty_current_file_after_a_rotation_verifies(sealed: Sealed) -> None:
    rotated = Path(f"{sealed.log}.1")
    sealed.log.rename(rotated)
    sealed.log.touch()
    ran = sealed.verify(rotated, sealed.log, extra=("--seal", str(sealed.seal)))
    assert ran.status == 0, ran.out


def test_a_key_named_in_any_script_seals_and_verifies(tmp_path: Path) -> None:
    key, public = make_key(tmp_path / "keys", name="服务器/登录日志")
    sealed = Sealed(key, public, tmp_path / "login_log.txt")
    asyncio.run(seal_batches(sealed, [["a", "b"], ["c"]]))
    ran = sealed.verify()
    assert ran.status == 0, ran.out


def test_start_with_copies_when_many_batches_came_before_the_file_s_checkpoint(
    tmp_path: Path,
) -> None:
    key, public = make_key(tmp_path / "keys")
    sealed = Sealed(key, public, tmp_path / "login_log.txt")
    rotated = Path(f"{sealed.log}.1")

    def rotate(index: int) -> None:
        if index == 19:
            sealed.log.rename(rotated)

    # Batches of one line, faster than the sealer's interval: dozens of L records come
    # between a file's first line and the checkpoint that carries the tree's state there.
    names = [[f"n{b}"] for b in range(80)]
    asyncio.run(seal_batches(sealed, names, pause=0.001, interval=0.2, between=rotate))
    copies = tmp_path / "journal.txt"
    copies.write_text(
        "".join(f"login-log-checkpoint {r.split(' ')[1]}\n"
                for r in sealed.records() if r[:2] in ("C ", "K "))
    )  # fmt: skip
    started = sealed.verify(sealed.log, extra=("--start", "20", "--checkpoint", str(copies)))
    assert started.status == 0, started.out
    assert "verified from line 21 (--start)" in started.out
