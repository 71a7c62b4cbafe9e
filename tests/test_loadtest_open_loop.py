"""Open loop against a real hypercorn that stalls: the corrected latency shows the stall.

The server is stopped with SIGSTOP for a second in the middle of a run. A
closed-loop run hides it (its few requests in flight wait, nothing else is
sent); an open-loop run at a modest rate keeps the requests due meanwhile,
and their latency counts from when they were due.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from quart_app.tools.loadtest import LoadConfig, main, run_load
from quart_app.tools.loadtest.schedule import LATE_TOLERANCE_NS, ClosedSchedule, OpenSchedule
from quart_app.tools.server import ROOT

from helpers.server import Server, run_server

STALL_S = 1.0
CONCURRENCY = 4


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    tmp_path = tmp_path_factory.mktemp("open_loop")
    log = tmp_path / "login_log.txt"
    with run_server(tmp_path, env={"QUART_LOGIN_LOG_PATH": str(log)}) as server:
        yield server, log


def run_with_a_stall(
    server: Server,
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    stall_at: float = 1.0,
    stall_s: float = STALL_S,
) -> dict[str, Any]:
    """Run the command (JSON out) in a thread; stop the server ``stall_s`` after ``stall_at``."""
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(main, [server.url, *argv, "--json"])
        time.sleep(stall_at)
        server.signal_group(signal.SIGSTOP)
        try:
            time.sleep(stall_s)
        finally:
            server.signal_group(signal.SIGCONT)
        status = run.result(timeout=60)
    out = capsys.readouterr().out
    assert status == 0, out
    return json.loads(out)


def test_open_loop_latency_shows_a_stall_that_closed_loop_hides(
    server_log: tuple[Server, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, log = server_log
    common = ["-d", "3", "-c", str(CONCURRENCY), "--verify", str(log)]
    closed = run_with_a_stall(server, common, capsys)
    opened = run_with_a_stall(server, [*common, "--rate", "200"], capsys)
    print("closed loop:", closed["latency_ms"], "client lag", closed["loop_lag_ms"])
    print("open loop:", opened["latency_ms"], "service", opened["service_time_ms"])
    print("open loop:", opened["rate"], opened["late"], "client lag", opened["loop_lag_ms"])

    assert (closed["mode"], opened["mode"]) == ("closed", "open")
    assert opened["verify"]["ok"] and closed["verify"]["ok"]
    stall_ms = STALL_S * 1000
    # The ~200 requests due in the stall waited for it, up to a second: the top 1% did.
    assert opened["latency_ms"]["p99"] >= 0.8 * stall_ms
    # Closed loop: only its 4 requests in flight saw it, far under 1% of the run,
    # and so did the open loop's service time, counted from the (late) send.
    assert closed["latency_ms"]["p99"] < opened["latency_ms"]["p99"] / 4
    assert opened["service_time_ms"]["p99"] < opened["latency_ms"]["p99"] / 4
    assert closed["latency_ms"]["max"] >= 0.8 * stall_ms  # the stall was there all the same
    # All but the few sent before it filled the slots started late, and then caught up.
    assert opened["late"]["count"] >= 100
    assert opened["late"]["max_start_lag_ms"] >= 0.8 * stall_ms
    assert opened["dropped"] == 0
    assert opened["rate"]["achieved"] > 0.9 * 200
    # The second is the server's: the client's own loop was never that late.
    assert opened["loop_lag_ms"]["p99"] < 0.1 * stall_ms


def test_drop_late_does_not_send_what_could_not_start_on_time(
    server_log: tuple[Server, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, log = server_log
    argv = ["-d", "2", "-c", str(CONCURRENCY), "--rate", "200", "--drop-late"]
    summary = run_with_a_stall(server, [*argv, "--verify", str(log)], capsys, stall_at=0.5)
    print("drop-late:", summary["dropped"], summary["late"], summary["requests"])

    # ~200 were due in the stall; the 4 slots took a few, the rest were dropped.
    assert summary["dropped"] >= 150
    assert summary["requests"] + summary["dropped"] == 400
    assert summary["late"]["max_start_lag_ms"] < 0.5 * STALL_S * 1000  # none waited it out
    # Dropped logins were never sent: nothing of them in the log, and no fault.
    assert summary["verify"]["ok"] is True
    assert summary["verify"]["acknowledged"] == summary["requests"]


def test_drop_late_drops_what_a_stall_past_the_duration_kept_from_starting(
    server_log: tuple[Server, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # Every worker waits on the stalled server until after -d is over: the
    # requests due meanwhile could not start on time, so they were dropped.
    server, log = server_log
    argv = ["-d", "2", "-c", str(CONCURRENCY), "--rate", "100", "--drop-late"]
    summary = run_with_a_stall(
        server, [*argv, "--verify", str(log)], capsys, stall_at=0.5, stall_s=2.0
    )
    print("drop-late past -d:", summary["dropped"], summary["unsent_at_end"], summary["requests"])

    assert summary["dropped"] >= 100
    assert summary["unsent_at_end"] == 0
    assert summary["requests"] + summary["dropped"] == 200
    assert summary["late"]["count"] == 0
    assert summary["verify"]["ok"] is True


async def test_drop_late_drops_a_request_whose_worker_woke_late() -> None:
    # The client's loop blocks now and then (as a long GC pause would): a
    # worker sleeping until a due time wakes late, and must drop, not send.
    def block(done: int, elapsed: float) -> None:
        time.sleep(0.02)

    # Nobody listens on port 1: each request fails at once, the workers mostly sleep.
    config = LoadConfig("http://127.0.0.1:1", requests=200, rate=200, concurrency=4, drop_late=True)
    summary = await run_load(config, progress=block, progress_interval=0.05)
    open_loop = summary.open_loop
    assert open_loop is not None
    print("woke late:", open_loop.dropped, open_loop.late, open_loop.max_start_lag_s)

    assert open_loop.dropped > 0
    assert open_loop.late == 0
    assert open_loop.max_start_lag_s <= LATE_TOLERANCE_NS / 1e9
    assert summary.requests + open_loop.dropped == 200


def test_a_client_stall_marks_the_run_invalid(server_log: tuple[Server, Path]) -> None:
    # The client, not the server, stopped for a second: every request due
    # meanwhile starts late, and the figures measure the client.
    server, _ = server_log
    command = [sys.executable, "-m", "quart_app.tools.loadtest", server.url, "-d", "3"]
    command += ["-c", str(CONCURRENCY), "--rate", "200", "--json"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT) as client:
        time.sleep(2)  # the import, then a second of the run
        client.send_signal(signal.SIGSTOP)
        try:
            time.sleep(STALL_S)
        finally:
            client.send_signal(signal.SIGCONT)
        out, _ = client.communicate(timeout=60)
    assert client.returncode == 0, out
    summary = json.loads(out)
    print("client stall:", summary["late"], "client lag", summary["loop_lag_ms"])

    assert summary["late"]["max_start_lag_ms"] >= 0.5 * STALL_S * 1000
    assert summary["valid"] is False
    assert "the client's event-loop lag max" in summary["invalid_reason"]


@pytest.mark.parametrize("drop_late", [[], ["--drop-late"]], ids=["late", "drop-late"])
def test_sending_stops_at_the_duration_however_far_behind(drop_late: list[str]) -> None:
    # Nobody listens on port 1: every request fails at once, far slower than 1,000,000/s.
    command = [sys.executable, "-m", "quart_app.tools.loadtest", "http://127.0.0.1:1", "-d", "0.5"]
    command += ["-c", "2", "--rate", "1000000", "--json", *drop_late]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    print(summary["requests"], summary["dropped"], summary["duration_s"], summary["rate"])

    assert 0.5 <= summary["duration_s"] < 1.5
    # Requests started over the -d window, not over the first and last start.
    assert summary["rate"]["achieved"] == pytest.approx(summary["requests"] / 0.5, rel=0.01)
    if drop_late:
        assert summary["dropped"] > 100_000


def test_throughput_and_achieved_rate_count_the_whole_window(
    server_log: tuple[Server, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # Due at 0, 0.5 and 1 s of a 1.5 s window: 2 per second, not 3 in the 1 s to the last.
    server, _ = server_log
    assert main([server.url, "-q", "-d", "1.5", "--rate", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests"] == 3
    assert summary["duration_s"] >= 1.5
    assert summary["rate"]["achieved"] == pytest.approx(2.0)
    assert summary["rps"] == pytest.approx(2.0, rel=0.05)


def due_times(schedule: OpenSchedule) -> list[int]:
    return [due for _, due in iter(schedule.next, None)]  # type: ignore[misc]


def test_constant_arrivals_are_due_every_1_over_rate_until_the_duration_is_over() -> None:
    config = LoadConfig("http://h", duration=0.01, rate=1000)
    # Every request claimed at the start (a clock that stands still), all due in the 10 ms.
    schedule = OpenSchedule(config, start_ns=5, clock=lambda: 5)
    assert due_times(schedule) == [5 + k * 1_000_000 for k in range(10)]
    # A rate whose period is no whole number of nanoseconds does not drift.
    dues = due_times(OpenSchedule(LoadConfig("http://h", requests=301, rate=3), start_ns=0))
    assert dues[-1] == 100 * 10**9


def test_poisson_arrivals_have_exponential_gaps_of_mean_1_over_rate() -> None:
    config = LoadConfig("http://h", requests=5000, rate=1000, arrivals="poisson")
    dues = due_times(OpenSchedule(config, start_ns=0))
    gaps = [b - a for a, b in pairwise(dues)]
    mean = statistics.fmean(gaps)
    assert len(dues) == 5000
    assert mean == pytest.approx(1_000_000, rel=0.1)
    assert statistics.stdev(gaps) / mean == pytest.approx(1, abs=0.2)  # 0 if constant


def test_closed_loop_requests_are_never_due() -> None:
    schedule = ClosedSchedule(LoadConfig("http://h", requests=3), start_ns=0)
    assert list(iter(schedule.next, None)) == [(0, None), (1, None), (2, None)]


@pytest.mark.parametrize(
    ("rate", "shown"),
    [
        ("0.001", "0.001"),
        ("0.0123", "0.0123"),
        ("2.5", "2.5"),
        ("200", "200"),
        ("1234.56", "1,235"),
    ],
)
def test_rates_are_shown_with_three_significant_digits(
    rate: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["http://127.0.0.1:1", "-q", "--rate", rate, "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert f"rate         target {shown}/s (constant), achieved " in out


def test_a_low_achieved_rate_is_not_shown_as_0(capsys: pytest.CaptureFixture[str]) -> None:
    # One request, sent at once (to nobody), due every 1,000 s: achieved as the target.
    assert main(["http://127.0.0.1:1", "-q", "--rate", "0.001", "-n", "1"]) == 0
    assert "target 0.001/s (constant), achieved 0.001/s" in capsys.readouterr().out


def test_json_rates_are_not_rounded(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["http://127.0.0.1:1", "-q", "--rate", "0.04", "-n", "1", "--json"]) == 0
    rate = json.loads(capsys.readouterr().out)["rate"]
    assert rate["target"] == 0.04
    assert rate["achieved"] == pytest.approx(0.04, rel=0.01)  # not 0.0


@pytest.mark.parametrize(
    ("argv", "achieved"),
    [
        (["--rate", "0.5", "-d", "0.5"], 0.5),  # 1 request due in the window, not 1 / 0.5 s
        (["--rate", "200", "-n", "1"], 200),  # not 1 / (5 ms + the time to send it)
        (["--rate", "3", "-d", "1.5"], 3),  # 5 due (0, 1/3, ... 4/3 s), 5 sent
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_the_achieved_rate_is_the_target_when_all_that_was_due_was_sent(
    argv: list[str], achieved: float, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["http://127.0.0.1:1", "-q", *argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rate"]["achieved"] == pytest.approx(achieved)


def test_help_says_what_the_achieved_rate_is(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "achieved rate: the target times the share of the requests due that were sent" in out
