"""Login records and their two line formats, text (the original's) and JSON Lines.

Text lines are ``登录日志:用户名:{username},登录时间:{time},ip地址:{ip}``. The
username and IP come from the client, so characters that could forge a line or
a field, or fool a human or grep reading one, are escaped, reversibly:

* ``\\`` becomes ``\\\\``;
* the comma (the field separator), every character that is not printable
  (Unicode categories Cc, Cf, Cs, Co, Cn, Zl, Zp and every space but U+0020:
  exactly what ``str.isprintable`` refuses) or shows as nothing all the same
  (:data:`INVISIBLE`), and the look-alikes of the separators ``,`` and ``:``
  (:data:`LOOKALIKES`) become ``\\xHH`` (below U+0100), ``\\uHHHH`` (below
  U+10000) or ``\\UHHHHHHHH``, in lowercase hex.

Everything else, ``张三`` or ``o'brien`` included, is written as it is, and
:func:`unescape` (or :func:`parse_line`) reads a field back exactly. JSON Lines
escape the same characters the JSON way (``\\uHHHH``, a surrogate pair above
U+FFFF), so that no raw U+2028/U+2029 reaches a JavaScript-based reader.
Readers of older lines: docs/log-format.md.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

TEXT_PREFIX = "登录日志:用户名:"
TIME_LABEL = ",登录时间:"
IP_LABEL = ",ip地址:"

LOOKALIKES = (
    # Commas: low quotation mark, fullwidth, small, ideographic, vertical, the
    # cedilla, and the commas of other scripts (Unicode's confusables.txt).
    "\u201a\uff0c\ufe50\ufe51\u3001\uff64\ufe10\ufe11\u00b8"
    "\u060c\u060d\u066b\u055d\u07f8\u1363\u1802\u1808\u2e41\ua4f9\ua4fe\ua60d"
    # Colons: fullwidth, small, vertical, ratio, modifier letters and the
    # colon-like punctuation and signs of other scripts (confusables.txt).
    "\uff1a\ufe55\ufe13\ufe30\u2236\ua789\u02d0\u02f8\u205a\u0589\u05c3\u0703\u0704"
    "\u0903\u0a83\u16ec\u1803\u1809\ua4fd"
)
"""Printable characters that look like the text format's separators ``,`` and ``:``."""

INVISIBLE = (
    # What str.isprintable() lets through but shows as nothing: the default
    # ignorable code points it counts as printable (the combining grapheme
    # joiner, Hangul fillers, Khmer inherent vowels, Mongolian and other
    # variation selectors), and the blank Braille pattern.
    "\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u2800\u3164\ufe00-\ufe0f\uffa0"
    "\U000e0100-\U000e01ef"
)
"""A regular-expression class body: printable characters that are invisible all the same."""

INVISIBLE_CHARACTER = re.compile(f"[{INVISIBLE}]")
# Printable characters escaped all the same; anything not printable is escaped too.
_TEXT_SPECIAL = re.compile(f"[\\\\,{LOOKALIKES}{INVISIBLE}]")
_JSON_SPECIAL = re.compile(f"[{LOOKALIKES}{INVISIBLE}]")
_ESCAPE_SEQUENCE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


class LoginRecord(NamedTuple):
    """One login: who, when (timezone-aware) and from which address."""

    username: str
    time: datetime
    ip: str


def _escape_char(char: str) -> str:
    if char.isprintable() and not _TEXT_SPECIAL.match(char):
        return char
    if char == "\\":
        return "\\\\"
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(value: str) -> str:
    """Escape ``value`` for a text log field (see the module docstring)."""
    # C-level scans settle a plain name, an ASCII one fastest (no look-alike
    # or invisible character is ASCII); only others are escaped char by char.
    if value.isascii():
        if value.isprintable() and "," not in value and "\\" not in value:
            return value
    elif value.isprintable() and not _TEXT_SPECIAL.search(value):
        return value
    return "".join(map(_escape_char, value))


def _unescape_sequence(match: re.Match[str]) -> str:
    body = match.group(1)
    return "\\" if body == "\\" else chr(int(body[1:], 16))


def unescape(value: str) -> str:
    """Invert :func:`escape`."""
    return _ESCAPE_SEQUENCE.sub(_unescape_sequence, value)


_SECOND = timedelta(seconds=1)
_NO_SECOND = datetime.max.replace(tzinfo=UTC)
_LAST_SECOND = _NO_SECOND.replace(microsecond=0)


class _Times:
    """Formats times as this module writes them; in UTC, the date and time of day once a second.

    A batch holds many logins of each second, and formatting a whole
    timestamp took more than half the time of formatting a line.
    """

    __slots__ = ("base", "end", "sep", "start")

    def __init__(self, sep: str) -> None:
        self.sep = sep
        self.start = self.end = _NO_SECOND  # holds no time
        self.base = ""

    def __call__(self, time: datetime) -> str:
        if time.tzinfo is not UTC:
            return time.isoformat(sep=self.sep, timespec="microseconds")
        # Compared as datetimes, exactly: a float timestamp loses the microseconds
        # after the year 2255 and put 23:59:59.999999 in the next second.
        if not self.start <= time < self.end:
            self.start = time.replace(microsecond=0)
            # The last second there is has no next one.
            self.end = self.start + _SECOND if self.start < _LAST_SECOND else _NO_SECOND
            self.base = time.isoformat(sep=self.sep, timespec="seconds")[:19]
        return f"{self.base}.{time.microsecond:06d}+00:00"


def text_lines(records: Iterable[LoginRecord]) -> bytes:
    """Records as the original's lines, username and IP escaped, as UTF-8."""
    times = _Times(" ")
    return "".join(
        [
            f"{TEXT_PREFIX}{escape(username)}{TIME_LABEL}{times(time)}{IP_LABEL}{escape(ip)}\n"
            for username, time, ip in records
        ]
    ).encode()


def format_text(record: LoginRecord) -> bytes:
    """One record as the original's line (see :func:`text_lines`)."""
    return text_lines((record,))


def _json_escape_char(char: str) -> str:
    if char.isprintable() and not _JSON_SPECIAL.match(char):
        return char
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON writes such a character
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_escaped(text: str) -> str:
    """JSON text from ``json.dumps(..., ensure_ascii=False)`` with the characters
    :func:`jsonl_lines` escapes escaped."""
    if not text.isprintable() or _JSON_SPECIAL.search(text):
        return "".join(map(_json_escape_char, text))
    return text


def _json_line(username: str, time: str, ip: str) -> str:
    text = json.dumps(
        {"event": "login", "username": username, "time": time, "ip": ip}, ensure_ascii=False
    )
    return json_escaped(text) + "\n"


def jsonl_lines(records: Iterable[LoginRecord]) -> bytes:
    """Records as JSON objects, one a line, as UTF-8.

    ``json.dumps`` escapes quotes, backslashes and C0 controls; every other
    character that is not printable or is invisible, and the look-alikes of
    ``,`` and ``:``, are escaped as ``\\uHHHH`` too, which any JSON parser reads
    back.
    """
    times = _Times("T")
    return "".join(
        [_json_line(username, times(time), ip) for username, time, ip in records]
    ).encode()


def format_jsonl(record: LoginRecord) -> bytes:
    """One record as a JSON line (see :func:`jsonl_lines`)."""
    return jsonl_lines((record,))


FORMATTERS: dict[str, Callable[[Iterable[LoginRecord]], bytes]] = {
    "text": text_lines,
    "jsonl": jsonl_lines,
}
"""The line formats by name: each turns a batch of records into its lines."""


def _checked(record: LoginRecord, line: str) -> LoginRecord:
    # What this module writes, and nothing else: a line glued to a torn one,
    # or cut short, fails one of these.
    if record.time.tzinfo is None:
        raise ValueError(f"login time without a timezone: {line!r}")
    if record.ip != "-":
        try:
            address = ipaddress.ip_address(record.ip)
        except ValueError:
            raise ValueError(f"not an IP address: {line!r}") from None
        mapped = getattr(address, "ipv4_mapped", None)
        # Older versions wrote an IPv4-mapped client as ::ffff:192.0.2.1.
        if str(address) != record.ip and not (mapped and record.ip == f"::ffff:{mapped}"):
            raise ValueError(f"not an IP address as written here: {line!r}")
    return record


def parse_line(line: str) -> LoginRecord:
    """Read one log line of either format back into a :class:`LoginRecord`.

    Raises ``ValueError`` for a line that is neither, and for one whose fields
    this module would not have written (a raw comma in the username, an IP
    field that is no address, a time without a timezone).
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
        return _checked(record, line)
    if not line.startswith(TEXT_PREFIX):
        raise ValueError(f"not a login line: {line!r}")
    username, sep1, rest = line[len(TEXT_PREFIX) :].partition(TIME_LABEL)
    time, sep2, ip = rest.partition(IP_LABEL)
    if not (sep1 and sep2) or "," in username:
        raise ValueError(f"malformed login line: {line!r}")
    return _checked(
        LoginRecord(unescape(username), datetime.fromisoformat(time), unescape(ip)), line
    )
