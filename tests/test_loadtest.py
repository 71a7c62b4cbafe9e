"""The load generator against a real hypercorn: counts, verification, exit status, plot."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram

from quart_app.records import LoginRecord, format_jsonl, format_text
from quart_app.tools.loadtest import LoadConfig, Logins, main, run_load, verify_log
from quart_app.tools.loadtest.report import summary_dict, summary_text
from quart_app.tools.loadtest.stats import Timeline
from quart_app.tools.server import ROOT, Server, free_port, run_server

from helpers.server import refused

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """One server for the module (starting hypercorn is the slow part), and its log."""
    tmp_path = tmp_path_factory.mktemp("loadtest")
    log = tmp_path / "login_log.txt"
    with run_server(tmp_path, env={"QUART_LOGIN_LOG_PATH": str(log)}) as server:
        yield server, log


def _run_lines(log: Path, stem: str) -> list[str]:
    return [line for line in log.read_text(encoding="utf-8").splitlines(True) if stem in line]


def test_cli_run_is_counted_verified_and_plotted(
    server_log: tuple[Server, Path], tmp_path: Path
) -> None:
    server, log = server_log
    plot = tmp_path / "run.png"
    command = [
        sys.executable, "-m", "quart_app.tools.loadtest", server.url,
        "--requests", "300", "--concurrency", "20",
        "--json", "--verify", str(log), "--plot", str(plot),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)

    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["requests"] == 300
    assert summary["statuses"] == {"200": 300}
    assert summary["errors"] == 0
    assert summary["rps"] > 0
    latency = summary["latency_ms"]
    assert list(latency) == ["p50", "p90", "p99", "p99.9", "p99.99", "max"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p99.99"]
    assert latency["p99.99"] <= latency["max"]
    histogram = HdrHistogram.decode(summary["histograms"]["latency_us"])
    assert histogram.get_total_count() == 300
    assert histogram.get_max_value() / 1000 == pytest.approx(latency["max"], rel=1e-3)
    verify = summary["verify"]
    assert verify["ok"] is True
    assert (verify["acknowledged"], verify["logged_once"]) == (300, 300)
    assert (verify["missing"], verify["doubled"]) == (0, 0)
    assert plot.read_bytes().startswith(PNG_MAGIC)
    assert done.stderr == ""  # no progress bar when not on a terminal


async def test_verify_counts_a_removed_and_a_doubled_line(
    server_log: tuple[Server, Path], tmp_path: Path
) -> None:
    server, log = server_log
    ticks: list[tuple[int, float]] = []
    config = LoadConfig(server.url, requests=200, concurrency=10, method="post")
    summary = await run_load(config, progress=lambda done, elapsed: ticks.append((done, elapsed)))
    assert summary.requests == 200
    assert summary.statuses == {200: 200}
    assert len(summary.acknowledged) == 200
    assert ticks[-1] == (200, summary.duration_s)
    assert summary.stem is not None
    result = await verify_log(log, summary.logins())
    assert result.ok
    assert result.logged_once == 200

    lines = _run_lines(log, summary.stem)
    assert len(lines) == 200
    removed = tmp_path / "removed.txt"
    removed.write_text("".join(lines[1:]), encoding="utf-8")
    # Files the test wrote whole: nothing comes later to wait for.
    result = await verify_log(removed, summary.logins(), max_wait=0.1, settle=0)
    assert not result.ok
    assert (result.missing, result.doubled, result.logged_once) == (1, 0, 199)
    assert len(result.missing_examples) == 1
    assert result.missing_examples[0] in lines[0]

    doubled = tmp_path / "doubled.txt"
    doubled.write_text("".join([*lines, lines[7]]), encoding="utf-8")
    result = await verify_log(doubled, summary.logins(), max_wait=0.1, settle=0)
    assert not result.ok
    assert (result.missing, result.doubled, result.logged_once) == (0, 1, 199)


async def test_verify_reads_both_formats_and_leaves_an_unfinished_line(tmp_path: Path) -> None:
    at = datetime.now(UTC)
    log = tmp_path / "mixed.log"
    log.write_bytes(
        format_jsonl(LoginRecord("run-1", at, "127.0.0.1"))
        + format_text(LoginRecord("run-2", at, "127.0.0.1"))
        + format_text(LoginRecord("someone-else", at, "10.0.0.1"))
        + format_jsonl(LoginRecord("run-3", at, "127.0.0.1"))  # answered, but not with a 200
        + format_text(LoginRecord("run-1", at, "127.0.0.1")).rstrip(b"\n")  # still being written
    )
    sent = dict.fromkeys(["run-1", "run-2", "run-3"], 1)
    logins = Logins(sent, acknowledged={"run-1", "run-2"}, run_prefix="run-")
    result = await verify_log(log, logins, max_wait=0.1, settle=0)
    assert result.ok
    assert (result.logged_once, result.unacknowledged_logged, result.unreadable) == (2, 1, 0)


async def test_a_line_that_is_no_login_record_fails_verify(tmp_path: Path) -> None:
    # What two writers interleaving, or a torn write, leave in the log.
    at = datetime.now(UTC)
    whole = format_text(LoginRecord("run-1", at, "127.0.0.1"))
    log = tmp_path / "torn.log"
    log.write_bytes(whole + whole[:20] + format_text(LoginRecord("run-2", at, "::1")) + b"{}\n")

    result = await verify_log(log, Logins.sent_once(["run-1"]), max_wait=0, settle=0)
    assert not result.ok
    assert result.unreadable == 2
    assert result.unreadable_examples[1] == f"{log}:3: not a login record: '{{}}'"
    assert result.to_dict()["unreadable"] == 2


def test_cli_refuses_a_run_id_already_in_the_log(
    server_log: tuple[Server, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # A reused run id: its logins would read as logged twice.
    server, log = server_log
    with log.open("ab") as file:
        file.write(format_text(LoginRecord("dup-fixed01-0", datetime.now(UTC), "127.0.0.1")))
    argv = [server.url, "-n", "50", "--prefix", "dup-", "--run-id", "fixed01"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--json", "--verify", str(log)])

    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error: run id 'fixed01' is already in the log (dup-fixed01-0)" in captured.err
    assert _run_lines(log, "dup-fixed01-") == [_run_lines(log, "dup-fixed01-0")[0]]


def test_cli_exits_1_when_logins_are_missing(
    server_log: tuple[Server, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = server_log
    elsewhere = tmp_path / "not_the_servers_log.txt"
    elsewhere.touch()
    status = main([server.url, "-n", "20", "--verify", str(elsewhere), "--verify-timeout", "0.2"])

    assert status == 1
    out = capsys.readouterr().out
    assert "verify       FAILED: 20 acknowledged, 0 logged once, 20 missing" in out


def test_cli_says_when_the_log_file_does_not_exist(
    server_log: tuple[Server, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not "20 missing": the log is, and the fault is in the command, not the server.
    server, _ = server_log
    nowhere = tmp_path / "no_such_log.txt"
    status = main([server.url, "-n", "20", "--verify", str(nowhere), "--verify-timeout", "0.2"])

    assert status == 1
    out, err = capsys.readouterr()
    assert "missing" not in out
    assert f"cannot read the log to verify: the log file {str(nowhere)!r} does not exist" in err


async def test_bare_duration_run_without_usernames(server_log: tuple[Server, Path]) -> None:
    server, _ = server_log
    config = LoadConfig(server.url, duration=0.5, concurrency=4, path="/", usernames=False)
    summary = await run_load(config)
    assert summary.requests > 0
    assert summary.statuses == {200: summary.requests}
    assert summary.acknowledged == []
    assert 0.5 <= summary.duration_s < 2


async def test_unreachable_server_counts_transport_errors() -> None:
    config = LoadConfig(f"http://127.0.0.1:{free_port()}", requests=30, concurrency=3)
    summary = await run_load(config)
    assert summary.requests == 30
    assert summary.statuses == {}
    assert summary.error_count == 30
    assert summary.latency_ms() == {}


def test_cli_refuses_verify_without_usernames(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["http://127.0.0.1:1", "--no-usernames", "--verify", "log.txt"], capsys)
    assert "--verify needs the usernames" in err


def test_timeline_buckets_by_second_and_keeps_gaps() -> None:
    second = 1_000_000_000
    timeline = Timeline(start_ns=0)
    timeline.record(second // 2, 1_000, failed=False)
    timeline.record(second // 2, 3_000, failed=True)
    timeline.record_error(second // 2)
    timeline.record(2 * second + 1, 2_000, failed=False)
    timeline.finish(2 * second + second // 2)

    first, gap, last = timeline.seconds
    assert (first.responses, first.failures) == (2, 2)
    assert first.latency_ms["max"] == pytest.approx(3.0, rel=1e-3)
    assert (gap.responses, gap.latency_ms) == (0, {})
    assert (last.start_s, last.span_s, last.throughput) == (2.0, 0.5, 2.0)
    assert timeline.total.get_total_count() == 3


async def test_a_client_that_falls_behind_marks_the_run_invalid(
    server_log: tuple[Server, Path],
) -> None:
    server, _ = server_log
    loop = asyncio.get_running_loop()
    hog: asyncio.TimerHandle | None = None

    def block_the_loop() -> None:
        nonlocal hog
        time.sleep(0.03)  # the client busy elsewhere: its answers and sends wait
        hog = loop.call_later(0.005, block_the_loop)

    block_the_loop()
    try:
        summary = await run_load(LoadConfig(server.url, duration=0.5, concurrency=4))
    finally:
        assert hog is not None
        hog.cancel()

    data = summary_dict(summary)
    assert data["valid"] is False
    assert data["loop_lag_ms"]["p99"] > 20
    assert "event-loop lag p99" in data["invalid_reason"]
    assert "INVALID      the client's event-loop lag p99" in summary_text(summary)
