"""Log lines as records: which lines to parse, and parsing them without ever raising.

Shared by every reader of log files: a whole file read once, and a file
followed as it grows.
"""

from __future__ import annotations

from datetime import UTC

from quart_app.records import LoginRecord, parse_line

from .found import Bad, Found
from .query import Query, needles

REASON_CHARS = 120
"""How much of a parser's message a report keeps: a junk line may be megabytes long."""


def read_line(line: bytes) -> LoginRecord:
    """One line (without its newline) as a record; ``ValueError`` says why it is none."""
    try:
        text = line.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 at byte {exc.start}") from None
    try:
        record = parse_line(text)
    except RecursionError:  # JSON nested thousands deep
        raise ValueError("not a login line: JSON nested too deep") from None
    except ValueError as exc:
        message = str(exc)
        if len(message) > REASON_CHARS:
            message = message[:REASON_CHARS] + "…"
        raise ValueError(message) from None
    if not (record.username.isprintable() or _encodes(record.username)):
        # The server refuses lone surrogates: a line holding one was not written by it.
        raise ValueError("a username with a lone surrogate, which no server writes")
    try:
        record = record._replace(time=record.time.astimezone(UTC))
    except OverflowError:  # 0001-01-01 at +01:00: before the year 1 in UTC
        raise ValueError("a time out of range in UTC") from None
    return record


def _encodes(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def scan(data: bytes, first_line: int, path: str, query: Query) -> list[Found | Bad]:
    """The records of ``data`` (whole lines, each ending with a newline) that match ``query``,
    and the lines that could match but do not parse; ``first_line`` is the first one's number.

    With a username to look for, only the lines holding it as a log writes it
    are parsed: the rest cannot match, and skipping them is what makes a
    search by user fast.
    """
    found: list[Found | Bad] = []
    wanted = needles(query)
    if wanted is None:
        number = first_line
        for line in data.split(b"\n")[:-1]:
            _take(line, f"{path}:{number}", query, found)
            number += 1
        return found
    starts: set[int] = set()
    for needle in wanted:
        at = data.find(needle)
        while at >= 0:
            start = data.rfind(b"\n", 0, at) + 1
            starts.add(start)
            at = data.find(needle, data.index(b"\n", at) + 1)
    number, counted = first_line, 0
    for start in sorted(starts):
        number += data.count(b"\n", counted, start)
        counted = start
        _take(data[start : data.index(b"\n", start)], f"{path}:{number}", query, found)
    return found


def could_match(data: bytes, query: Query) -> bool:
    """Whether ``data`` (a torn line, say) holds what a line matching ``query`` would."""
    wanted = needles(query)
    return wanted is None or any(needle in data for needle in wanted)


def _take(line: bytes, place: str, query: Query, found: list[Found | Bad]) -> None:
    try:
        record = read_line(line)
    except ValueError as exc:
        found.append(Bad(place, str(exc)))
        return
    if query.matches(record):
        found.append(Found(record, place))
