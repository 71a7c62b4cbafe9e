"""A sealed log served by a real hypercorn: ``-w 2``, rotation, restarts, SIGKILL, a log
edited while stopped, a key the app must refuse, a hung disk."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from quart_app.records import parse_line

from helpers.seal import Sealed, make_key
from helpers.server import run_server, send_logins
from helpers.trail import run_log
from helpers.waiting import until


@pytest.fixture
def sealed(tmp_path: Path) -> Sealed:
    key, public = make_key(tmp_path / "keys")
    return Sealed(key, public, tmp_path / "login_log.txt")


def env_of(sealed: Sealed, **more: str) -> dict[str, str]:
    return {
        "QUART_LOGIN_LOG_PATH": str(sealed.log),
        "QUART_LOGIN_LOG_SEAL_KEY": str(sealed.key),
        "QUART_LOGIN_LOG_SEAL_INTERVAL": "0.2",
        **{f"QUART_{key.upper()}": value for key, value in more.items()},
    }


def usernames(*paths: Path) -> list[str]:
    names = []
    for path in paths:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        names += [parse_line(line).username for line in data.decode().splitlines()]
    return names


async def test_two_workers_extend_one_tree_and_a_clean_stop_verifies(
    sealed: Sealed, tmp_path: Path
) -> None:
    names = [f"w2-{i:05d}" for i in range(3000)]
    with run_server(tmp_path, env_of(sealed, login_log_seal_epoch="0.5"), workers=2) as server:
        run = await send_logins(server.url, names)
        assert server.stop() == 0
        stderr = server.stderr
    assert run.statuses == {200: len(names)}
    assert sorted(usernames(sealed.log)) == names
    ran = sealed.verify()
    assert ran.status == 0, ran.out
    assert "3,000 line(s), sealed up to line 3,000 by" in ran.out
    # Every checkpoint went to stderr too, and the log matches those copies.
    copies = tmp_path / "stderr.txt"
    copies.write_text(stderr)
    assert stderr.count("login-log-checkpoint ") >= 2
    checked = sealed.verify(extra=("--checkpoint", str(copies)))
    assert checked.status == 0, checked.out


async def test_rotation_mid_load_is_one_tree_across_files_and_a_missing_file_is_caught(
    sealed: Sealed, tmp_path: Path
) -> None:
    rotated = Path(f"{sealed.log}.1")
    names = [f"rot-{i:05d}" for i in range(3000)]
    with run_server(tmp_path, env_of(sealed), workers=2) as server:
        run = await send_logins(
            server.url, names, when_half_done=lambda: sealed.log.rename(rotated)
        )
        assert server.stop() == 0
        copies = tmp_path / "stderr.txt"
        copies.write_text(server.stderr)
    assert run.statuses == {200: len(names)}
    archived = Path(f"{rotated}.gz")
    archived.write_bytes(gzip.compress(rotated.read_bytes()))
    rotated.unlink()
    assert sorted(usernames(archived, sealed.log)) == names
    first = len(usernames(archived))
    assert 0 < first < len(names)

    ran = sealed.verify(archived, sealed.log)
    assert ran.status == 0, ran.out
    assert f"{archived}: {first:,} line(s) read" in ran.out
    # The first file removed, or the files given out of order: caught.
    alone = sealed.verify(sealed.log)
    assert alone.status == 1
    assert "line(s) after line" in alone.out or "not the line sealed" in alone.out
    swapped = sealed.verify(sealed.log, archived)
    assert swapped.status == 1
    # Removed on purpose by retention: verify starts at the second file's checkpoint.
    started = sealed.verify(sealed.log, extra=("--start", str(first)))
    assert started.status == 0, started.out
    assert f"verified from line {first + 1:,} (--start)" in started.out
    # Checked against the copies too: those of the removed file's lines are said to be left.
    copied = sealed.verify(sealed.log, extra=("--start", str(first), "--checkpoint", str(copies)))
    assert copied.status == 0, copied.out
    assert "cover only lines before --start: not checked" in copied.out


async def test_sigkill_then_restart_seals_what_was_written_and_verifies(
    sealed: Sealed, tmp_path: Path
) -> None:
    # Durable: every login answered 200 is on disk (without, the last moment may not be).
    first = [f"kill-{i:05d}" for i in range(2000)]
    with run_server(tmp_path, env_of(sealed, login_log_durable="true"), workers=2) as server:
        killed = await send_logins(
            server.url, first, when_half_done=lambda: server.signal_group(signal.SIGKILL)
        )
        server.process.wait(timeout=10)
    then = [f"then-{i:05d}" for i in range(500)]
    with run_server(tmp_path, env_of(sealed), workers=2) as server:
        run = await send_logins(server.url, then)
        assert server.stop() == 0
    logged = usernames(sealed.log)
    assert set(killed.acknowledged) <= set(logged)
    assert run.statuses == {200: len(then)}
    ran = sealed.verify()
    assert ran.status == 0, ran.out
    assert "BREAK" not in ran.out


async def test_a_log_edited_while_stopped_starts_a_new_tree_keeps_serving_and_is_reported(
    sealed: Sealed, tmp_path: Path
) -> None:
    with run_server(tmp_path, env_of(sealed)) as server:
        await send_logins(server.url, [f"before-{i}" for i in range(50)])
        assert server.stop() == 0
    lines = sealed.lines()
    lines[9] = lines[9].replace(b"before-", b"mallory-")
    sealed.write_lines(lines)
    with run_server(tmp_path, env_of(sealed)) as server:
        run = await send_logins(server.url, [f"after-{i}" for i in range(50)])
        assert server.stop() == 0
        stderr = server.stderr
    assert run.statuses == {200: 50}
    assert (
        "the log no longer matches its seals (line 10 of the file is not the line sealed)" in stderr
    )
    assert re.search(r"ERROR.*a new tree begins", stderr) or "a new tree begins" in stderr
    ran = sealed.verify()
    assert ran.status == 1
    assert f"FAILED: {sealed.log} line 10: not the line sealed" in ran.out
    assert "BREAK: line 10 of the file is not the line sealed" in ran.out
    # The new tree covers the file as it was found, and everything since.
    assert "100 line(s), sealed up to line 100" in ran.out


def test_lines_added_after_a_clean_stop_are_a_break_at_the_next_start(
    sealed: Sealed, tmp_path: Path
) -> None:
    with run_server(tmp_path, env_of(sealed)) as server:
        assert server.stop() == 0
    sealed.log.write_text(
        "登录日志:用户名:ghost,登录时间:2026-12-01 00:00:00+00:00,ip地址:1.2.3.4\n"
    )
    with run_server(tmp_path, env_of(sealed)) as server:
        assert server.stop() == 0
        assert "lines were added to a new file after a clean stop" in server.stderr


@pytest.mark.parametrize(
    ("arrange", "reason"),
    [
        (lambda s: s.key.unlink(), "it does not exist (make one: quart-app-log keygen)"),
        (lambda s: s.key.chmod(0o644), "its mode is 0644: group or others can reach it"),
        (lambda s: s.key.write_text("not a key\n"), "it is not a signing key"),
        (lambda s: os.mkfifo(s.log), "a sealed log must be a regular file"),
    ],
    ids=["missing", "group-readable", "not-a-key", "fifo-log"],
)
def test_the_app_refuses_to_start_saying_why(
    sealed: Sealed, tmp_path: Path, arrange, reason
) -> None:
    arrange(sealed)
    with run_server(tmp_path, env_of(sealed)) as server:
        status = server.process.wait(timeout=30)
        stderr = server.stderr
    assert status != 0
    assert reason in stderr, stderr


@contextmanager
def frozen_disk(path: Path) -> Iterator[tuple[Path, Callable[[bool], None]]]:
    """An ext4 image mounted on ``path``, and a function that freezes (True) or thaws it:
    a frozen file system hangs every write, as a dead disk does. Skips without root."""
    image = path.with_suffix(".img")
    subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
    made = subprocess.run(["mkfs.ext4", "-q", str(image)], capture_output=True, text=True)
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(path)], capture_output=True, text=True
    )
    if made.returncode or mounted.returncode:
        pytest.skip(f"cannot mount an ext4 image here: {made.stderr}{mounted.stderr}".strip())
    frozen = False

    def freeze(on: bool) -> None:
        nonlocal frozen
        subprocess.run(["fsfreeze", "-f" if on else "-u", str(path)], check=True, timeout=30)
        frozen = on

    try:
        yield path, freeze
    finally:
        if frozen:
            subprocess.run(["fsfreeze", "-u", str(path)], check=False, timeout=30)
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_a_stop_on_a_hung_disk_stays_in_its_bounds_and_the_log_verifies_after(
    tmp_path: Path,
) -> None:
    with frozen_disk(tmp_path / "disk") as (disk, freeze):
        key, public = make_key(disk / "keys")
        sealed = Sealed(key, public, disk / "login_log.txt")
        env = env_of(sealed, login_log_drain_timeout="2", login_log_full_timeout="0.5")
        with run_server(tmp_path, env) as server:
            run = await send_logins(server.url, [f"early-{i}" for i in range(200)])
            assert run.statuses == {200: 200}
            await asyncio.sleep(0.5)  # sealed
            freeze(True)
            try:
                hung = await send_logins(
                    server.url, [f"hung-{i}" for i in range(50)], concurrency=10
                )
                server.process.send_signal(signal.SIGTERM)
                # The stop gives up on the hung disk within its bound, and says so; the
                # process cannot finish exiting while a thread of it is stuck.
                await until(lambda: "exit status 3" in server.stderr, "the stop's verdict", 20)
            finally:
                freeze(False)  # before anything waits for the process to die
            assert server.process.wait(timeout=30) == 3
            stderr = server.stderr
        # Every login answered 200 is in the log, or in the stop's list of those it could not
        # confirm (the promise of today, sealed or not).
        unconfirmed = {
            parse_line(line.split("): ", 1)[1]).username
            for line in stderr.splitlines()
            if "NOT CONFIRMED WRITTEN" in line
        }
        assert set(hung.acknowledged) <= set(usernames(sealed.log)) | unconfirmed
        ran = sealed.verify()
        assert ran.status == 0, ran.out
        assert "sealed up to line 200" in ran.out or "sealed up to line 2" in ran.out


def test_verify_of_a_running_app_reports_the_unsealed_tail_without_failing(
    sealed: Sealed, tmp_path: Path
) -> None:
    env = env_of(sealed, login_log_seal_interval="3600")
    with run_server(tmp_path, env) as server:
        asyncio.run(send_logins(server.url, [f"live-{i}" for i in range(20)]))
        ran = sealed.verify()
        assert server.stop() == 0
    assert ran.status == 0, ran.out
    assert (
        "the last 20 line(s), written since the last checkpoint while the app runs, are not"
        in ran.out
    )
    assert run_log("verify", "--key", sealed.public, sealed.log).status == 0
