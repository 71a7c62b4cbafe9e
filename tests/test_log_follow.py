"""``quart-app-log search --follow``: records written after it started, through rotation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from quart_app.records import LoginRecord, format_text

from helpers.logs import wait_for_records
from helpers.server import run_server
from helpers.trail import COMMAND, assert_read_back, send_as_clients


@contextlib.asynccontextmanager
async def following(log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``quart-app-log search LOG --follow --format jsonl``, stopped by SIGTERM at the end."""
    follower = await asyncio.create_subprocess_exec(
        COMMAND, "search", str(log), "--follow", "--format", "jsonl",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield follower
    finally:
        follower.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await follower.wait()


async def _next_records(stream: asyncio.StreamReader, count: int) -> list[dict]:
    records = []
    async with asyncio.timeout(10):
        while len(records) < count:
            records.append(json.loads(await stream.readline()))
    return records


async def test_follow_sees_new_records_across_a_rotation_and_a_removal(tmp_path: Path) -> None:
    log = tmp_path / "login_log.txt"
    env = {"QUART_LOGIN_LOG_PATH": str(log), "QUART_PROXY_TRUSTED_HOPS": "1"}
    with run_server(tmp_path, env) as server:
        before = await send_as_clients(server.url, ["before-1", "before-2"])
        await wait_for_records(log, 2)
        follower = await asyncio.create_subprocess_exec(
            COMMAND, "search", str(log), "--follow", "-n", "1", "--format", "jsonl",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert follower.stdout is not None and follower.stderr is not None
        try:
            seen = await _next_records(follower.stdout, 1)  # -n 1: the last one only
            during = await send_as_clients(server.url, ["during-1", "during-2"])
            seen += await _next_records(follower.stdout, 2)
            log.rename(tmp_path / "login_log.txt.1")
            rotated = await send_as_clients(server.url, ["after-rotation"])
            seen += await _next_records(follower.stdout, 1)
            await wait_for_records(log, 1)
            log.unlink()
            await asyncio.sleep(0.5)  # the follower sees the file gone
            removed = await send_as_clients(server.url, ["after-removal"])
            seen += await _next_records(follower.stdout, 1)
        finally:
            follower.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                status = await follower.wait()
        err = (await follower.stderr.read()).decode()
    assert_read_back(seen, [before[-1], *during, *rotated, *removed])
    assert [item["source"] for item in seen] == [f"{log}:{n}" for n in (2, 3, 4, 1, 1)]
    assert status == 0
    assert err == (
        f"quart-app-log: {log}:2: vanished: waiting for it to return\n"
        "quart-app-log: 1 problems reported above; the rest was read\n"
    )


async def test_follow_reads_what_a_writer_finishes_in_the_file_rotated_away(
    tmp_path: Path,
) -> None:
    # A writer that was mid-batch at the rotation appends its last lines to the old file.
    log = tmp_path / "login_log.txt"
    at = datetime.now(UTC)
    log.write_bytes(format_text(LoginRecord("first", at, "127.0.0.1")))
    async with following(log) as follower:
        assert follower.stdout is not None
        seen = await _next_records(follower.stdout, 1)
        rotated = tmp_path / "login_log.txt.1"
        log.rename(rotated)
        log.write_bytes(format_text(LoginRecord("in-the-new-file", at, "127.0.0.1")))
        seen += await _next_records(follower.stdout, 1)
        with rotated.open("ab") as old:
            old.write(format_text(LoginRecord("late-in-the-old-file", at, "127.0.0.1")))
        seen += await _next_records(follower.stdout, 1)
    assert [item["username"] for item in seen] == [
        "first",
        "in-the-new-file",
        "late-in-the-old-file",
    ]
    assert seen[2]["source"] == f"{log}:2"


async def test_follow_rereads_a_file_rewritten_in_place_past_its_old_end(tmp_path: Path) -> None:
    # copytruncate, then more written at once than the file held: its size never looks smaller.
    log = tmp_path / "login_log.txt"
    at = datetime.now(UTC)
    log.write_bytes(format_text(LoginRecord("u1", at, "127.0.0.1")))
    async with following(log) as follower:
        assert follower.stdout is not None and follower.stderr is not None
        seen = await _next_records(follower.stdout, 1)
        names = [f"v{n}" for n in range(1, 5)]
        log.write_bytes(b"".join(format_text(LoginRecord(n, at, "127.0.0.1")) for n in names))
        seen += await _next_records(follower.stdout, 4)
    assert [item["username"] for item in seen] == ["u1", *names]
    assert (
        "truncated in place: read again from its start" in (await follower.stderr.read()).decode()
    )
