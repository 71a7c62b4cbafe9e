"""Verdicts of quart-app-loadtest --verify that must not pass by accident.

These run against a small fake server whose faults are exact: it answers 503,
or drops a kept-alive connection without answering, or logs a login twice.
It logs a login before answering it, so nothing of a run comes later: its
runs pass ``--verify-settle 0`` (:data:`SETTLED`). Reading on is tested with
the server of ``helpers/liar.py``, which logs a login again later.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from quart_app.records import LoginRecord, format_text
from quart_app.tools.loadtest import LoadConfig, main, run_load, verify_log
from quart_app.tools.loadtest.verify import SETTLE_S
from quart_app.tools.server import free_port

from helpers.liar import lying_server, to_file

SETTLED = ["--verify-settle", "0"]
"""For the fake server's runs: every line is in the log before its answer."""

Answer = Callable[[str, int], int | None]
"""Given a username and how many times it arrived, the status to answer.

None: log the login, then hang up without answering, as a server whose
connection drops after it took the login.
"""


class FakeServer:
    """A raw HTTP/1.1 server that logs each login it answers 200, as quart_app would.

    ``received`` counts every request that arrived, per username, whatever the answer.
    """

    def __init__(self, log: Path, answer: Answer, log_times: int = 1) -> None:
        self.log = log
        self.answer = answer
        self.log_times = log_times
        self.received: Counter[str] = Counter()
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                target = head.split(b" ", 2)[1].decode()
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                body = await reader.readexactly(int(length[1])) if length else b""
                form = dict(parse_qsl(urlsplit(target).query) + parse_qsl(body.decode()))
                username = form.get("username", "")
                self.received[username] += 1
                status = self.answer(username, self.received[username])
                if status in (200, None):
                    record = LoginRecord(username, datetime.now(UTC), "127.0.0.1")
                    with self.log.open("ab") as file:
                        file.write(format_text(record) * self.log_times)
                if status is None:
                    break
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def fake_server(log: Path, answer: Answer, log_times: int = 1) -> AsyncIterator[FakeServer]:
    fake = FakeServer(log, answer, log_times)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    fake.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield fake


async def run_cli(argv: list[str]) -> int:
    """The command in a thread: its own event loop, while the fake server runs on this one."""
    return await asyncio.to_thread(main, argv)


def test_verify_fails_when_the_server_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "login_log.txt"
    status = main([f"http://127.0.0.1:{free_port()}", "-n", "20", "-q", "--verify", str(log)])

    assert status == 1
    out = capsys.readouterr().out
    assert "verify       FAILED: 0 acknowledged" in out
    assert "nothing was acknowledged" in out


async def test_verify_fails_when_every_login_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "login_log.txt"
    async with fake_server(log, lambda username, count: 503) as fake:
        status = await run_cli([fake.url, "-n", "20", "--json", "--verify", str(log)])

    assert status == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["statuses"] == {"503": 20}
    assert summary["verify"]["ok"] is False
    assert summary["verify"]["acknowledged"] == 0


async def test_a_dropped_connection_is_not_resent_so_no_login_is_logged_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # aiohttp resends an idempotent GET once when the connection drops before
    # the answer; the server had taken the first one, so a resend is a second
    # login on the server for one request of the tool.
    def every_fourth(username: str) -> bool:
        return int(username.rsplit("-", 1)[1]) % 4 == 1

    def hang_up_on_every_fourth(username: str, count: int) -> int | None:
        return None if count == 1 and every_fourth(username) else 200

    log = tmp_path / "login_log.txt"
    async with fake_server(log, hang_up_on_every_fourth) as fake:
        argv = [fake.url, "-n", "40", "-c", "2", "--run-id", "drop", "--json"]
        status = await run_cli([*argv, "--verify", str(log), "--verify-timeout", "0.5", *SETTLED])

    summary = json.loads(capsys.readouterr().out)
    dropped = sum(map(every_fourth, fake.received))
    assert dropped == 10
    assert max(fake.received.values()) == 1, "a request of the tool reached the server twice"
    assert summary["statuses"] == {"200": 40 - dropped}
    assert summary["errors"] == summary["resends_refused"] == dropped
    verify = summary["verify"]
    assert (verify["ok"], verify["doubled"], verify["missing"]) == (True, 0, 0)
    assert verify["unacknowledged_logged"] == dropped
    assert status == 0


async def test_a_login_the_server_logs_twice_fails_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "login_log.txt"
    async with fake_server(log, lambda username, count: 200, log_times=2) as fake:
        argv = [fake.url, "-n", "10", "--run-id", "twice", "--json", "--verify", str(log)]
        status = await run_cli([*argv, *SETTLED])

    assert status == 1
    verify = json.loads(capsys.readouterr().out)["verify"]
    assert (verify["ok"], verify["doubled"], verify["logged_once"]) == (False, 10, 0)
    assert verify["doubled_examples"][0].startswith("lt-twice-")


async def test_a_login_logged_again_later_fails_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 15: every login is in the log the moment it is answered, and in it
    # again 1.5 s later. --verify reads on after the last one came, and
    # counts the second lines.
    log = tmp_path / "login_log.txt"
    async with lying_server(to_file(log), again_after=1.5) as url:
        status = await run_cli([url, "-n", "10", "--run-id", "late", "--verify", str(log)])

    out = capsys.readouterr().out
    assert status == 1
    assert (
        "verify       FAILED: 10 acknowledged, 0 logged once, 0 missing, "
        "10 logged more often than sent (waited "
    ) in out
    assert re.search(r"\(waited \d+\.\d\d s, then settled \d+\.\d\d s\)", out)
    assert "doubled e.g. lt-late-" in out


async def test_a_server_that_logs_each_login_once_passes_verify_after_settling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "login_log.txt"
    async with lying_server(to_file(log), again_after=None) as url:
        status = await run_cli([url, "-n", "10", "--json", "--verify", str(log)])

    verify = json.loads(capsys.readouterr().out)["verify"]
    assert status == 0
    assert (verify["ok"], verify["logged_once"], verify["doubled"]) == (True, 10, 0)
    assert verify["settled_s"] >= SETTLE_S  # read on for the whole default time


async def test_verify_settle_0_takes_the_verdict_once_every_login_is_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Turned off, the check ends when the last acknowledged login is in: the
    # second lines, due a minute later, are never read.
    log = tmp_path / "login_log.txt"
    async with lying_server(to_file(log), again_after=60) as url:
        argv = [url, "-n", "10", "--json", "--verify", str(log), "--verify-settle", "0"]
        status = await run_cli(argv)

    verify = json.loads(capsys.readouterr().out)["verify"]
    assert status == 0
    assert (verify["ok"], verify["logged_once"], verify["doubled"]) == (True, 10, 0)


async def test_a_run_of_given_names_verifies_every_line_of_a_log_it_owns(tmp_path: Path) -> None:
    log = tmp_path / "login_log.txt"
    names = ["张三", "o'brien", "a,b", "张三", *(f"user-{i}" for i in range(20))]
    async with fake_server(log, lambda username, count: 200) as fake:
        config = LoadConfig(fake.url, names=names, method="post", concurrency=4)
        summary = await run_load(config)
        result = await verify_log(log, summary.logins(every_line=True), max_wait=0, settle=0)
        assert result.ok, result
        assert (result.logged_once, result.repeated_logged) == (22, 1)
        assert summary.sent == Counter(names) == fake.received
        assert sorted(summary.acknowledged) == sorted(names)

        # A line for a login nobody sent is a fault when the run owns the log.
        await run_load(LoadConfig(fake.url, names=["intruder"]))
        result = await verify_log(log, summary.logins(every_line=True), max_wait=0, settle=0)
        assert (result.ok, result.unsent_examples) == (False, ("intruder",))


async def test_run_ids_that_share_a_beginning_do_not_collide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "m1-1"'s usernames lt-m1-1-n start with "m1"'s stem lt-m1-: neither run is the other's.
    log = tmp_path / "login_log.txt"
    async with fake_server(log, lambda username, count: 200) as fake:
        for run_id in ["m1-1", "m1", "m1-10"]:
            argv = [fake.url, "-n", "12", "--run-id", run_id, "--verify", str(log)]
            status = await run_cli([*argv, "--verify-timeout", "1", *SETTLED])
            out, err = capsys.readouterr()
            assert status == 0, out + err
            assert "verify       OK: 12 acknowledged, 12 logged once, 0 missing" in out
            assert "never sent" not in out


async def test_a_plot_that_fails_after_the_run_still_shows_the_summary_and_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "login_log.txt"
    plot = tmp_path / "gone" / "run.png"
    plot.parent.mkdir()

    def remove_the_directory(username: str, count: int) -> int:
        if plot.parent.exists():
            plot.parent.rmdir()  # checked before the run, gone by its end
        return 200

    async with fake_server(log, remove_the_directory) as fake:
        argv = [fake.url, "-n", "5", "-c", "1", "--verify", str(log), "--plot", str(plot)]
        status = await run_cli([*argv, *SETTLED])

    out, err = capsys.readouterr()
    assert status == 1
    assert "requests     5 in" in out
    assert "verify       OK: 5 acknowledged" in out
    assert "plot" not in out
    assert "cannot draw the plot: FileNotFoundError" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("fault", ["missing", "a directory"])
async def test_a_log_unreadable_after_the_run_fails_verify_in_json_too(
    fault: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The server logs elsewhere; the log to verify is gone, or became a directory.
    verified = tmp_path / "verified.txt"
    if fault == "a directory":
        verified.touch()  # readable before the run

    def answer(username: str, count: int) -> int:
        if fault == "a directory" and verified.is_file():
            verified.unlink()
            verified.mkdir()
        return 200

    async with fake_server(tmp_path / "login_log.txt", answer) as fake:
        argv = [fake.url, "-n", "5", "--json", "--verify", str(verified)]
        status = await run_cli([*argv, "--verify-timeout", "0.2"])

    out, err = capsys.readouterr()
    assert status == 1
    verify = json.loads(out)["verify"]
    assert verify["ok"] is False
    reason = err.strip().removeprefix("quart-app-loadtest: ")
    assert verify["reason"] == reason
    expected = "does not exist" if fault == "missing" else "IsADirectoryError"
    assert reason.startswith("cannot read the log to verify: ") and expected in reason


async def test_a_line_of_the_run_that_is_no_login_record_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As --help says: a torn write among the run's lines fails the verification.
    log = tmp_path / "login_log.txt"

    def tear_once(username: str, count: int) -> int:
        if username.endswith("-0"):
            with log.open("ab") as file:
                file.write(b"half a line\n")
        return 200

    async with fake_server(log, tear_once) as fake:
        argv = [fake.url, "-n", "5", "-c", "1", "--verify", str(log), "--verify-timeout", "0.5"]
        status = await run_cli([*argv, *SETTLED])

    out = capsys.readouterr().out
    assert status == 1
    assert "verify       FAILED: 5 acknowledged, 5 logged once" in out
    assert "1 lines are no login record" in out


def test_help_says_what_fails_verify_and_where_timeouts_go(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    exit_status = out[out.index("exit status:") :]
    assert "or a line the log gained during the run or its check is no login record" in exit_status
    assert "Requests that time out (--timeout) are counted as errors" in out
    # The default settle time, and why it is enough for this server.
    assert "(default 2.5: the server's 50 ms batches and its longest wait, 2 s," in out
    assert "not in the latency percentiles" in out
