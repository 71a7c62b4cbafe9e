"""``quart-app-log`` against what a hostile or careless user gives it (second hostile pass)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quart_app.records import LoginRecord, format_text

from helpers.pg import Database, password_of
from helpers.trail import COMMAND, run_log

AT = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def log_of(tmp_path: Path, *lines: bytes | str) -> Path:
    path = tmp_path / "login_log.txt"
    path.write_bytes(b"".join(line if isinstance(line, bytes) else line.encode() for line in lines))
    return path


@pytest.mark.parametrize(
    "source",
    [
        "postgresql+asyncpg://app:S3cretPW@db.example/audit",
        "postgresql:/app:S3cretPW@db.example/audit",
        " postgresql://app:S3cretPW@db.example/audit",
        "postgresq://app:S3cretPW@db.example/audit",
    ],
)
def test_a_mistyped_database_url_is_a_usage_error_that_never_shows_the_password(
    source: str,
) -> None:
    ran = run_log("search", source, "-n", "1")
    assert ran.status == 2
    assert "S3cretPW" not in ran.out + ran.err
    assert "neither a postgresql:// URL nor a file name" in ran.err


def test_two_urls_to_purge_are_refused_without_echoing_them() -> None:
    url = "postgresql://app:S3cretPW@127.0.0.1:1/audit"
    ran = run_log("purge", url, url, "--before", "1d", "--yes")
    assert ran.status == 2
    assert "S3cretPW" not in ran.err


@pytest.mark.parametrize(
    "table", ['login_log" WHERE $1 <> $1 OR true --', 'x"; drop table login_log; --', "Login"]
)
def test_a_table_name_that_is_not_one_is_a_usage_error(table: str) -> None:
    ran = run_log("search", "postgresql://app@127.0.0.1:1/audit", "--table", table)
    assert ran.status == 2
    assert "must be a lower-case table name" in ran.err


@pytest.mark.parametrize(
    "argv",
    [
        ["--since", "99999999d"],
        ["--since", "999999999w"],
        ["--since", "9999-12-31T23:59:59-05:00"],
        ["--until", "0001-01-01T00:00+01:00"],
        ["-n", "99999999999999999999"],
    ],
)
def test_times_and_counts_out_of_range_are_usage_errors(tmp_path: Path, argv: list[str]) -> None:
    ran = run_log("search", log_of(tmp_path, format_text(LoginRecord("a", AT, "-"))), *argv)
    assert (ran.status, ran.out) == (2, "")
    assert "Traceback" not in ran.err


def test_a_record_whose_time_is_out_of_range_in_utc_is_a_bad_line(tmp_path: Path) -> None:
    log = log_of(
        tmp_path,
        "登录日志:用户名:old,登录时间:0001-01-01 00:00:00.000000+01:00,ip地址:203.0.113.7\n",
        format_text(LoginRecord("year-99", datetime(99, 1, 1, tzinfo=UTC), "-")),
        format_text(LoginRecord("now", AT, "-")),
    )
    ran = run_log("search", log, "--format", "jsonl")
    assert ran.status == 0
    assert [item["username"] for item in ran.jsonl()] == ["year-99", "now"]
    assert f"{log}:1: a time out of range in UTC" in ran.err
    stats = run_log("stats", log, "--plot", tmp_path / "chart.png")
    assert stats.status == 0, stats.err
    assert "  0099-01-01           1" in stats.out
    assert "Traceback" not in stats.err


def test_plot_takes_a_png_and_says_when_there_is_nothing_to_draw(tmp_path: Path) -> None:
    log = log_of(tmp_path, format_text(LoginRecord("a", AT, "-")))
    assert run_log("stats", log, "--plot", tmp_path / "chart.xyz").status == 2
    empty = log_of(tmp_path)
    ran = run_log("stats", empty, "--plot", tmp_path / "chart.png")
    assert ran.status == 1
    assert "not drawn: no login to draw" in ran.err
    assert not (tmp_path / "chart.png").exists()


def test_older_lines_are_found_by_user_and_ip(tmp_path: Path) -> None:
    # Written raw by versions that escaped fewer characters, an IPv4-mapped client as
    # older versions logged it, and JSON with every non-ASCII character escaped.
    log = log_of(
        tmp_path,
        "登录日志:用户名:a\uff0cb,登录时间:2026-12-01 08:00:00.000000+00:00,"
        "ip地址:::ffff:203.0.113.99\n",
        '{"event":"login","username":"\\u5f20\\u4e09","time":"2026-12-01T08:00:01+00:00","ip":"-"}\n',
    )
    by_user = run_log("search", log, "--user", "a\uff0cb", "--format", "jsonl")
    assert [(r["username"], r["ip"]) for r in by_user.jsonl()] == [
        ("a\uff0cb", "::ffff:203.0.113.99")
    ]
    assert run_log("search", log, "--user", "张三").status == 0
    assert run_log("search", log, "--ip", "203.0.113.0/24").status == 0
    assert run_log("search", log, "--ip", "::ffff:203.0.113.99").status == 0
    assert by_user.err == ""


def test_a_source_without_line_ends_is_read_in_bounded_memory(tmp_path: Path) -> None:
    log = log_of(tmp_path, b"x" * (6 << 20) + b"\n", format_text(LoginRecord("a", AT, "-")))
    ran = run_log("search", log, "--format", "jsonl")
    assert ran.status == 0
    assert [item["username"] for item in ran.jsonl()] == ["a"]
    assert ran.jsonl()[0]["source"] == f"{log}:2"
    assert f"{log}:1: a line longer than 1,048,576 bytes: skipped" in ran.err


def test_ctrl_c_stops_a_search_blocked_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    process = subprocess.Popen([COMMAND, "search", str(fifo)], stderr=subprocess.PIPE)
    time.sleep(1)  # blocked in open(): no writer
    process.send_signal(signal.SIGINT)
    try:
        assert process.wait(timeout=10) == 1
    finally:
        process.kill()


def test_a_file_name_cannot_write_to_the_terminal(tmp_path: Path) -> None:
    name = tmp_path / "evil\x1b[2K\rquart-app-log: all good\n.log"
    name.write_text("junk\n")
    ran = run_log("search", name)
    assert "\x1b" not in ran.err and "\r" not in ran.err
    assert ran.err.count("\n") == 2  # the bad line, and the summary


async def test_purge_says_which_privileges_it_needs(database: Database) -> None:
    await database.create_table()
    writer = await database.insert_only_role()
    ran = run_log("purge", writer, "--table", database.table, "--before", "1d", "--dry-run")
    assert ran.status == 2
    assert "purge needs SELECT and DELETE on the table" in ran.err
    assert password_of(writer) not in ran.err
    asked = run_log("purge", database.url, "--table", database.table, "--before", "1d")
    assert asked.status == 1  # nothing older: nothing to ask about
