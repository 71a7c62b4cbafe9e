"""The line formats: what is escaped, how, and that every line reads back exactly."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quart_app.records import (
    INVISIBLE_CHARACTER,
    TEXT_PREFIX,
    LoginRecord,
    escape,
    format_jsonl,
    format_text,
    jsonl_lines,
    parse_line,
    text_lines,
    unescape,
)

from helpers.payloads import LOOKALIKES, naive_fields, strict_json, usernames

NOW = datetime(2026, 11, 24, 6, 0, 0, 123456, tzinfo=UTC)
WHEN = "2026-11-24 06:00:00.123456+00:00"


def test_a_lookalike_forgery_is_visibly_escaped() -> None:
    # U+201A looks like a comma; the zero-width spaces hide the end of the name.
    forged = "admin\u201a登录时间:2020-01-01 00:00:00.000000+00:00\u201aip地址:10.0.0.1\u200b\u200b"
    line = format_text(LoginRecord(forged, NOW, "192.0.2.1")).decode()
    assert line == (
        f"{TEXT_PREFIX}admin\\u201a登录时间:2020-01-01 00:00:00.000000+00:00"
        f"\\u201aip地址:10.0.0.1\\u200b\\u200b,登录时间:{WHEN},ip地址:192.0.2.1\n"
    )
    # grep ',ip地址:10.0.0.1$' finds only a line whose IP field is that address.
    assert not re.search(r",ip地址:10\.0\.0\.1$", line, re.MULTILINE)
    assert parse_line(line) == LoginRecord(forged, NOW, "192.0.2.1")
    jsonl = format_jsonl(LoginRecord(forged, NOW, "192.0.2.1")).decode()
    assert "\\u201aip地址:10.0.0.1\\u200b\\u200b" in jsonl


@pytest.mark.parametrize(
    ("char", "in_text", "in_json"),
    [
        # Look-alikes of "," and ":" (the ones the issue names first).
        ("\u201a", "\\u201a", "\\u201a"),
        ("\uff0c", "\\uff0c", "\\uff0c"),
        ("\ufe50", "\\ufe50", "\\ufe50"),
        ("\ufe51", "\\ufe51", "\\ufe51"),
        ("\u3001", "\\u3001", "\\u3001"),
        ("\uff1a", "\\uff1a", "\\uff1a"),
        ("\ufe55", "\\ufe55", "\\ufe55"),
        # Invisible or not printable: Cf, Zs other than U+0020, Co, Cn, Zl, Cc.
        ("\u200b", "\\u200b", "\\u200b"),
        ("\ufeff", "\\ufeff", "\\ufeff"),
        ("\u00ad", "\\xad", "\\u00ad"),
        ("\u00a0", "\\xa0", "\\u00a0"),
        ("\u3000", "\\u3000", "\\u3000"),
        ("\ue000", "\\ue000", "\\ue000"),
        ("\u0378", "\\u0378", "\\u0378"),
        ("\u2029", "\\u2029", "\\u2029"),
        ("\x7f", "\\x7f", "\\u007f"),
        ("\x00", "\\x00", "\\u0000"),
        # Above U+FFFF: tag characters and a private-use plane.
        ("\U000e0041", "\\U000e0041", "\\udb40\\udc41"),
        ("\U000f0000", "\\U000f0000", "\\udb80\\udc00"),
        # A lone surrogate (refused at the door, but a record may still hold one).
        ("\ud800", "\\ud800", "\\ud800"),
    ],
)
def test_each_character_that_fools_a_reader_has_its_escape(
    char: str, in_text: str, in_json: str
) -> None:
    record = LoginRecord(f"a{char}b", NOW, char)
    text = format_text(record).decode()
    assert text == f"{TEXT_PREFIX}a{in_text}b,登录时间:{WHEN},ip地址:{in_text}\n"
    jsonl = format_jsonl(record).decode()
    assert f'"username": "a{in_json}b"' in jsonl
    assert f'"ip": "{in_json}"' in jsonl
    with pytest.raises(ValueError, match="not an IP address"):
        parse_line(text)  # a reader refuses an IP field that is no address
    readable = record._replace(ip="2001:db8::1")
    assert parse_line(format_text(readable).decode()) == readable
    assert parse_line(format_jsonl(readable).decode()) == readable


@pytest.mark.parametrize("name", ["张三", "o'brien", "Zoë", "a:b", "Ελένη", "👩 dev", "x y"])
def test_plain_names_are_not_escaped(name: str) -> None:
    assert escape(name) == name
    assert f'"username": "{name}"' in format_jsonl(LoginRecord(name, NOW, "::1")).decode()


def test_lines_written_before_the_format_change_read_back_the_same() -> None:
    # Before issue 9 there was no \U escape; \xHH and \uHHHH mean what they meant.
    old = f"{TEXT_PREFIX}a\\x2cb\\u2028\\\\c\\ud800,登录时间:{WHEN},ip地址:203.0.113.9\n"
    assert parse_line(old) == LoginRecord("a,b\u2028\\c\ud800", NOW, "203.0.113.9")


def test_an_escape_beyond_unicode_is_not_a_login_line() -> None:
    with pytest.raises(ValueError):
        parse_line(f"{TEXT_PREFIX}\\U00110000,登录时间:{WHEN},ip地址:-")


@settings(max_examples=300)
@given(username=usernames, ip=usernames)
def test_property_every_line_is_one_printable_line_that_reads_back(username: str, ip: str) -> None:
    record = LoginRecord(username, NOW, ip)
    text = format_text(record).decode()
    assert text.endswith("\n")
    line = text[:-1]
    assert line.isprintable() and not LOOKALIKES & set(line)
    assert not INVISIBLE_CHARACTER.search(line)
    readable = record._replace(ip="192.0.2.7")
    assert parse_line(format_text(readable).decode()) == readable
    surrogates = any("\ud800" <= c <= "\udfff" for c in username + ip)
    # JSON writes a lone surrogate as \uHHHH, and a high one before a low one
    # reads back as their pair: only the text format keeps them apart (the app
    # refuses such names anyway).
    if not surrogates:
        assert parse_line(format_jsonl(readable).decode()) == readable
    # A human or grep splitting at the first of each label reads the same fields.
    naive_user, naive_time, naive_ip = naive_fields(line)
    assert (unescape(naive_user), naive_time, unescape(naive_ip)) == (username, WHEN, ip)
    jsonl = format_jsonl(record).decode()
    assert jsonl.endswith("\n") and jsonl[:-1].isprintable()
    assert not LOOKALIKES & set(jsonl)
    assert not INVISIBLE_CHARACTER.search(jsonl)
    if not surrogates:
        assert strict_json(jsonl[:-1])["username"] == username


HIDDEN = "\u3164\u115f\u1160\uffa0\u2800\u034f\ufe0f\U000e0100\u17b4\u180b"
"""Printable by str.isprintable(), yet they show as nothing."""
MORE_LOOKALIKES = "\u00b8\u060d\u066b\ua4f9\u02d0\u0903\u0a83\u1803\u1809\ua4fd"
"""Commas and colons in Unicode's confusables.txt."""


@pytest.mark.parametrize("char", list(HIDDEN + MORE_LOOKALIKES), ids=ascii)
def test_invisible_characters_and_more_lookalikes_are_escaped(char: str) -> None:
    record = LoginRecord(f"admin{char}", NOW, "192.0.2.1")
    text, jsonl = format_text(record).decode(), format_jsonl(record).decode()
    assert char not in text and char not in jsonl
    assert parse_line(text) == record == parse_line(jsonl)


@pytest.mark.parametrize(
    "line",
    [
        # A torn line another process appended to: the IP field holds the rest.
        f"{TEXT_PREFIX}f3-281,登录时间:{WHEN},ip地址:127.0.0{TEXT_PREFIX}f3-371,登录时间:{WHEN},"
        "ip地址:127.0.0.1",
        f"{TEXT_PREFIX}a,b,登录时间:{WHEN},ip地址:127.0.0.1",  # a raw comma: never written
        f"{TEXT_PREFIX}a,登录时间:{WHEN},ip地址:127.0.0.1,ip地址:10.0.0.1",
        f"{TEXT_PREFIX}a,登录时间:2026-11-24 06:00:00,ip地址:127.0.0.1",  # no timezone
        f"{TEXT_PREFIX}a,登录时间:{WHEN},ip地址:2001:DB8::1",  # not as written here
        '{"event": "login", "username": "a", "time": "2026-11-24T06:00:00+00:00", "ip": "x"}',
    ],
)
def test_a_line_this_format_never_writes_is_refused(line: str) -> None:
    with pytest.raises(ValueError):
        parse_line(line)


@settings(max_examples=200)
@given(
    base=st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9998, 1, 1)),
    offsets=st.lists(st.integers(-3_000_000, 3_000_000), max_size=30),
    zone=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(-timedelta(minutes=90))]),
)
def test_a_batch_writes_every_time_as_isoformat_would(
    base: datetime, offsets: list[int], zone: timezone
) -> None:
    # The time of day is formatted once a second in a batch; never differently.
    times = [base.replace(tzinfo=zone) + timedelta(microseconds=o) for o in sorted(offsets)]
    records = [LoginRecord("u", t, "192.0.2.1") for t in times]
    assert text_lines(records).decode() == "".join(
        f"{TEXT_PREFIX}u,登录时间:{t.isoformat(' ', 'microseconds')},ip地址:192.0.2.1\n"
        for t in times
    )
    assert [json.loads(line)["time"] for line in jsonl_lines(records).decode().splitlines()] == [
        t.isoformat(timespec="microseconds") for t in times
    ]


def test_times_the_last_microsecond_of_a_second_apart_keep_their_own_seconds() -> None:
    # A float timestamp loses microseconds after the year 2255 (found by hypothesis).
    end = datetime(2515, 1, 1, tzinfo=UTC)
    last = datetime.max.replace(tzinfo=UTC)
    times = [end - timedelta(microseconds=1), end, last - timedelta(seconds=1), last]
    assert text_lines([LoginRecord("u", t, "-") for t in times]).decode() == "".join(
        f"{TEXT_PREFIX}u,登录时间:{t.isoformat(' ', 'microseconds')},ip地址:-\n" for t in times
    )
