"""Login records and their two line formats, text (the original's) and JSON Lines.

Text lines are ``登录日志:用户名:{username},登录时间:{time},ip地址:{ip}``. The
username and IP come from the client, so characters that could forge a line or a
field are escaped, reversibly:

* ``\\`` becomes ``\\\\``;
* the comma (the field separator), every control character (C0, DEL, C1), the
  line and paragraph separators U+2028/U+2029, the bidi controls (U+061C,
  U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and lone surrogates become
  ``\\xHH`` (code points below 256) or ``\\uHHHH``.

Everything else, ``张三`` or ``o'brien`` included, is written as it is.
:func:`unescape` (or :func:`parse_line`) reads a field back exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

TEXT_PREFIX = "登录日志:用户名:"
TIME_LABEL = ",登录时间:"
IP_LABEL = ",ip地址:"

# DEL and C1 controls, bidi controls, line/paragraph separators, lone surrogates.
_INVISIBLE = "\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_NEEDS_ESCAPE = re.compile(f"[\\\\,\x00-\x1f{_INVISIBLE}]")
# In JSON the backslash and the C0 controls are already escaped by json.dumps.
_JSON_NEEDS_ESCAPE = re.compile(f"[{_INVISIBLE}]")
_ESCAPE_SEQUENCE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")


class LoginRecord(NamedTuple):
    """One login: who, when (timezone-aware) and from which address."""

    username: str
    time: datetime
    ip: str


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\\":
        return "\\\\"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value: str) -> str:
    """Escape ``value`` for a text log field (see the module docstring)."""
    return _NEEDS_ESCAPE.sub(_escape_char, value)


def _unescape_sequence(match: re.Match[str]) -> str:
    body = match.group(1)
    return "\\" if body == "\\" else chr(int(body[1:], 16))


def unescape(value: str) -> str:
    """Invert :func:`escape`."""
    return _ESCAPE_SEQUENCE.sub(_unescape_sequence, value)


def format_text(record: LoginRecord) -> bytes:
    """The original's line, with the username and IP escaped, as UTF-8."""
    username, ip = escape(record.username), escape(record.ip)
    time = record.time.isoformat(sep=" ", timespec="microseconds")
    return f"{TEXT_PREFIX}{username}{TIME_LABEL}{time}{IP_LABEL}{ip}\n".encode()


def _json_escape_char(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def format_jsonl(record: LoginRecord) -> bytes:
    """One JSON object on one line, as UTF-8.

    ``json.dumps`` escapes quotes, backslashes and C0 controls; the characters
    that some line readers still split on or that reorder text on screen are
    escaped as ``\\uHHHH`` too, which any JSON parser reads back.
    """
    text = json.dumps(
        {
            "event": "login",
            "username": record.username,
            "time": record.time.isoformat(timespec="microseconds"),
            "ip": record.ip,
        },
        ensure_ascii=False,
    )
    return (_JSON_NEEDS_ESCAPE.sub(_json_escape_char, text) + "\n").encode()


FORMATTERS: dict[str, Callable[[LoginRecord], bytes]] = {
    "text": format_text,
    "jsonl": format_jsonl,
}


def parse_line(line: str) -> LoginRecord:
    """Read one log line of either format back into a :class:`LoginRecord`.

    Raises ``ValueError`` for a line that is neither.
    """
    line = line.removesuffix("\n")
    if line.startswith("{"):
        data = json.loads(line)
        if not isinstance(data, dict) or data.get("event") != "login":
            raise ValueError(f"not a login record: {line!r}")
        try:
            username, time, ip = data["username"], data["time"], data["ip"]
            record = LoginRecord(username, datetime.fromisoformat(time), ip)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed login record ({exc!r}): {line!r}") from None
        if not (isinstance(username, str) and isinstance(ip, str)):
            raise ValueError(f"malformed login record: {line!r}")
        return record
    if not line.startswith(TEXT_PREFIX):
        raise ValueError(f"not a login line: {line!r}")
    username, sep1, rest = line[len(TEXT_PREFIX) :].partition(TIME_LABEL)
    time, sep2, ip = rest.partition(IP_LABEL)
    if not (sep1 and sep2):
        raise ValueError(f"malformed login line: {line!r}")
    return LoginRecord(unescape(username), datetime.fromisoformat(time), unescape(ip))
