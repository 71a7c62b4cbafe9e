"""``quart-app-log search`` and ``stats`` over log files written by a real server: text and
JSON Lines, rotated and gzipped, hostile usernames, addresses given by a trusted proxy."""

from __future__ import annotations

import asyncio
import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from quart_app.records import escape, parse_line

from helpers.logs import wait_for_records
from helpers.server import run_server
from helpers.trail import (
    FORMULA_NAMES,
    Sent,
    assert_read_back,
    hostile_usernames,
    run_log,
    send_as_clients,
)


@dataclass(frozen=True)
class Written:
    """A log rotated once and its older file gzipped, and the logins in it, oldest first."""

    sources: tuple[Path, Path]
    sent: list[Sent]
    lines_in_first: int


@pytest.fixture(scope="module", params=["text", "jsonl"])
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Written:
    workdir = tmp_path_factory.mktemp(f"trail-{request.param}")
    log = workdir / "login_log.txt"
    env = {
        "QUART_LOGIN_LOG_PATH": str(log),
        "QUART_LOGIN_LOG_FORMAT": request.param,
        "QUART_PROXY_TRUSTED_HOPS": "1",
    }
    names = hostile_usernames()
    half = len(names) // 2
    with run_server(workdir, env) as server:
        first = asyncio.run(send_as_clients(server.url, names[:half]))
        asyncio.run(wait_for_records(log, half))
        log.rename(workdir / "login_log.txt.1")  # as logrotate does
        second = asyncio.run(send_as_clients(server.url, names[half:]))
        assert server.stop() == 0
    rotated = workdir / "login_log.txt.1"
    zipped = workdir / "login_log.txt.1.gz"
    zipped.write_bytes(gzip.compress(rotated.read_bytes()))
    rotated.unlink()
    return Written((zipped, log), first + second, half)


def test_search_reads_back_exactly_the_logins_sent(written: Written) -> None:
    ran = run_log("search", *written.sources, "--format", "jsonl")
    assert (ran.status, ran.err) == (0, "")
    found = ran.jsonl()
    assert_read_back(found, written.sent)
    first, second = written.sources
    half = written.lines_in_first
    assert [item["source"] for item in found] == [
        *(f"{first}:{line}" for line in range(1, half + 1)),
        *(f"{second}:{line}" for line in range(1, len(written.sent) - half + 1)),
    ]


def test_text_output_is_the_seeds_line_for_each_login(written: Written) -> None:
    ran = run_log("search", *written.sources)
    assert ran.status == 0
    lines = ran.out.split("\n")
    assert lines.pop() == ""
    assert len(lines) == len(written.sent)
    for line, login in zip(lines, written.sent, strict=True):
        record = parse_line(line)
        assert (record.username, record.ip) == (login.username, login.ip)
        assert line.startswith(f"登录日志:用户名:{escape(login.username)},登录时间:")
        assert line.endswith(f"+00:00,ip地址:{login.ip}")


def test_every_hostile_username_is_found_by_user_and_only_it(written: Written) -> None:
    for login in written.sent:
        ran = run_log("search", *written.sources, f"--user={login.username}", "--format", "jsonl")
        assert ran.status == 0, (login.username, ran.err)
        assert_read_back(ran.jsonl(), [login])


def test_csv_gives_every_value_back_but_the_leading_quote(written: Written) -> None:
    ran = run_log("search", *written.sources, "--format", "csv")
    assert ran.status == 0
    assert ran.out.startswith("time,username,ip,source\r\n")
    rows = ran.csv()
    assert len(rows) == len(written.sent)
    formula = ("=", "+", "-", "@", "\t", "\r", "'")
    for row, login in zip(rows, written.sent, strict=True):
        for value in row.values():
            assert not value.startswith(formula) or value.startswith("'")
        quoted = login.username.startswith(formula)
        assert row["username"] == ("'" if quoted else "") + login.username
        assert row["ip"] == login.ip
    assert {name for name in FORMULA_NAMES} <= {login.username for login in written.sent}


def test_ip_matches_an_address_or_a_network_of_either_family(written: Written) -> None:
    cases = {
        "203.0.113.0/24": {"203.0.113.7", "203.0.113.200", "203.0.113.9"},
        "203.0.113.7": {"203.0.113.7"},
        "::ffff:203.0.113.9": {"203.0.113.9"},  # IPv4-mapped: its IPv4 form
        "::ffff:203.0.113.0/120": {"203.0.113.7", "203.0.113.200", "203.0.113.9"},
        "2001:db8::/48": {"2001:db8::1", "2001:db8:0:1::5"},
        "2001:db8:0:1::/64": {"2001:db8:0:1::5"},
    }
    for network, addresses in cases.items():
        ran = run_log("search", *written.sources, "--ip", network, "--format", "jsonl")
        assert ran.status == 0, (network, ran.err)
        assert_read_back(ran.jsonl(), [s for s in written.sent if s.ip in addresses])
    ran = run_log("search", *written.sources, "--ip", "192.0.2.0/24")
    assert (ran.status, ran.out) == (1, "")


def test_since_is_inclusive_until_exclusive_and_an_offset_is_honoured(written: Written) -> None:
    ran = run_log("search", *written.sources, "--format", "jsonl")
    times = [item["time"] for item in ran.jsonl()]
    middle = len(times) // 2
    if times[middle] == times[middle - 1]:
        pytest.skip("two logins in one microsecond")
    at = times[middle]
    in_shanghai = datetime.fromisoformat(at).astimezone(timezone(timedelta(hours=8))).isoformat()
    for since in (at, in_shanghai, at.removesuffix("+00:00")):
        later = run_log("search", *written.sources, "--since", since, "--format", "jsonl")
        assert_read_back(later.jsonl(), written.sent[middle:])
    earlier = run_log("search", *written.sources, "--until", in_shanghai, "--format", "jsonl")
    assert_read_back(earlier.jsonl(), written.sent[:middle])
    both = run_log("search", *written.sources, "--since", times[1], "--until", times[3])
    assert [parse_line(line).username for line in both.out.splitlines()] == [
        login.username for login in written.sent[1:3]
    ]
    future = run_log("search", *written.sources, "--since", "1h", "--until", "2999-01-01")
    assert future.status == 0  # logged within the hour
    old = run_log("search", *written.sources, "--until", "2020-01-01")
    assert (old.status, old.out) == (1, "")


def test_last_n_and_newest_first(written: Written) -> None:
    sent = written.sent
    last = run_log("search", *written.sources, "-n", "3", "--format", "jsonl")
    assert_read_back(last.jsonl(), sent[-3:])
    newest = run_log("search", *written.sources, "-n", "3", "-r", "--format", "jsonl")
    assert_read_back(newest.jsonl(), sent[-3:][::-1])
    everything = run_log("search", *written.sources, "-r", "--format", "jsonl")
    assert_read_back(everything.jsonl(), sent[::-1])
    login = sent[1]
    one = run_log("search", *written.sources, f"--user={login.username}", "-n", "1")
    assert one.out.count("\n") == 1 and escape(login.username) in one.out


def test_stats_counts_the_logins_users_and_addresses(written: Written, tmp_path: Path) -> None:
    chart = tmp_path / "chart.png"
    ran = run_log("stats", *written.sources, "--by", "hour", "--plot", chart)
    assert (ran.status, ran.err) == (0, "")
    sent = written.sent
    lines = ran.out.splitlines()
    assert f"logins              {len(sent):,}" in lines
    assert f"distinct users      {len({s.username for s in sent}):,}" in lines
    assert f"distinct addresses  {len({s.ip for s in sent}):,}" in lines
    hours = {s.after.strftime("%Y-%m-%d %H:00") for s in sent} | {
        s.before.strftime("%Y-%m-%d %H:00") for s in sent
    }
    per_hour = [line.split() for line in lines if line.startswith("  20")]
    assert {f"{day} {hour}" for day, hour, _ in per_hour} <= hours
    assert sum(int(count.replace(",", "")) for *_, count in per_hour) == len(sent)
    top = lines.index("top addresses")
    by_address = {ip: sum(s.ip == ip for s in sent) for ip in {s.ip for s in sent}}
    most = max(by_address.values())
    count, ip = lines[top + 1].split()
    assert (int(count), by_address[ip]) == (most, most)
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    by_day = run_log("stats", *written.sources)
    assert f"  {sent[0].after:%Y-%m-%d}" in by_day.out


def test_nothing_matched_is_status_1_and_an_unreadable_source_2(
    written: Written, tmp_path: Path
) -> None:
    nobody = run_log("search", *written.sources, "--user", "nobody-at-all")
    assert (nobody.status, nobody.out, nobody.err) == (1, "", "")
    missing = tmp_path / "no-such.log"
    ran = run_log("search", missing, *written.sources, "--format", "jsonl")
    assert ran.status == 2
    assert f"quart-app-log: {missing}: cannot be read: No such file or directory" in ran.err
    assert_read_back(ran.jsonl(), written.sent)  # the rest is read
    for argv in (
        ["--since", "yesterday"],
        ["--until", "2026-13-01"],
        ["--ip", "203.0.113.0/33"],
        ["-n", "0"],
        ["--format", "xml"],
    ):
        usage = run_log("search", *written.sources, *argv)
        assert (usage.status, usage.out) == (2, ""), argv
        assert "usage: quart-app-log search" in usage.err
    assert run_log("stats", missing).status == 2


@pytest.fixture
def junk(written: Written, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The written log with junk inside, and its gzipped file cut short."""
    first, second = written.sources
    data = second.read_bytes()
    lines = data.split(b"\n")
    bad = tmp_path / "with-junk.log"
    bad.write_bytes(
        b"\n".join([*lines[:2], b"\xff\xfe binary \x00 junk", b"{" * 5000 + b"}" * 5000])
        + b"\n"
        + b"\n".join(lines[2:-1])
        + b"\n"
        + lines[-2][:30]  # a torn last line, no newline
    )
    cut = tmp_path / "cut.gz"
    cut.write_bytes(first.read_bytes()[:-40])
    yield bad, cut


def test_bad_lines_are_reported_with_their_place_and_the_rest_is_read(
    written: Written, junk: tuple[Path, Path]
) -> None:
    bad, cut = junk
    ran = run_log("search", bad, "--format", "jsonl")
    assert ran.status == 0
    half = written.lines_in_first
    assert_read_back(ran.jsonl(), written.sent[half:])
    errors = ran.err.splitlines()
    assert errors[0] == f"quart-app-log: {bad}:3: not valid UTF-8 at byte 0"
    assert errors[1].startswith(f"quart-app-log: {bad}:4: ")
    last = len(written.sent) - half + 3
    assert errors[2] == (
        f"quart-app-log: {bad}:{last}: the last line has no newline (torn, or being written)"
    )
    assert errors[3:] == ["quart-app-log: 3 problems reported above; the rest was read"]
    truncated = run_log("search", cut, "--format", "jsonl")
    assert truncated.status == 0
    read = truncated.jsonl()
    assert 0 < len(read) < half
    assert_read_back(read, written.sent[: len(read)])
    assert "the compressed data ends early or is corrupt" in truncated.err
    assert truncated.err.endswith("1 problems reported above; the rest was read\n")


def test_user_search_skips_junk_that_cannot_match(junk: tuple[Path, Path]) -> None:
    bad, _ = junk
    ran = run_log("search", bad, "--user", "nobody-at-all")
    assert (ran.status, ran.err) == (1, "")


def test_a_gzip_file_is_known_by_its_content_not_its_name(written: Written, tmp_path: Path) -> None:
    renamed = tmp_path / "plain-name.log"
    renamed.write_bytes(written.sources[0].read_bytes())
    ran = run_log("search", renamed, "--format", "jsonl")
    assert_read_back(ran.jsonl(), written.sent[: written.lines_in_first])
    os.chmod(renamed, 0)
    if os.geteuid() != 0:  # root reads anything
        assert run_log("search", renamed).status == 2


def test_help_gives_the_exit_statuses_of_every_subcommand() -> None:
    for argv in (["--help"], ["search", "--help"], ["stats", "--help"], ["purge", "--help"]):
        ran = run_log(*argv)
        assert ran.status == 0
        assert "exit status (every subcommand):" in ran.out
        assert "  1  nothing matched" in ran.out
    assert run_log().status == 2
