"""Hostile logins for the property tests: what to send on each path, and what must follow.

A :class:`Login` is a request as bytes (method, query string, headers, body), so
that the same payloads go through Quart's test client and over raw HTTP/2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote

from hypothesis import strategies as st

from quart_app.records import (
    INVISIBLE_CHARACTER,
    IP_LABEL,
    TEXT_PREFIX,
    TIME_LABEL,
    LoginRecord,
    parse_line,
    unescape,
)

MAX_LENGTH = 256  # USERNAME_MAX_LENGTH's default
BOUNDARY = "pr0perty-b0undary-Zq7"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"

# Characters the first pass did not think of: look-alikes of the separators,
# invisible and format characters, line breaks, lone surrogates, NUL.
HOSTILE_CHARS = list(
    "\x00\t\n\r\x1b\x7f\x85\xa0\xad\\,:%&=+#;\"' "
    "\u061c\u180e\u200b\u200d\u200e\u202e\u2028\u2029\u2066\u3000\ufeff\ufffd"
    "\u201a\uff0c\ufe50\ufe51\u3001\uff1a\ufe55\ue000\u0378"
    "\ud800\udfff\U000e0041\U000e007f\U0001f469"
)
LOOKALIKES = set("\u201a\uff0c\ufe50\ufe51\u3001\uff1a\ufe55")
FRAGMENTS = [TEXT_PREFIX, TIME_LABEL, IP_LABEL, "\\x2c", "\\u201a", "\\U000e0041", "张三", "admin"]

_characters = st.one_of(
    st.characters(exclude_categories=()),  # surrogates included
    st.sampled_from(HOSTILE_CHARS),
)
usernames = st.lists(st.one_of(_characters, st.sampled_from(FRAGMENTS)), max_size=40).map(
    "".join
) | st.text(_characters, max_size=MAX_LENGTH + 20)

TEXT_PATHS = ["query", "query-raw", "form", "multipart", "json"]
BYTES_PATHS = ["query-bytes", "form-bytes", "multipart-bytes", "json-bytes"]


@dataclass(frozen=True)
class Login:
    """A login request as bytes."""

    method: str
    query: bytes
    content_type: str | None
    body: bytes


def _percent(text: str) -> bytes:
    return quote(text, safe="", errors="surrogatepass").encode()


def _raw_utf8(text: str) -> bytes:
    # As curl sends it: non-ASCII as raw UTF-8 bytes, ASCII percent-encoded where it must be.
    return b"".join(
        _percent(c) if c.isascii() else c.encode("utf-8", "surrogatepass") for c in text
    )


def _multipart(value: bytes) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="username"\r\n\r\n'.encode()
        + value
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def text_login(path: str, username: str) -> Login:
    """The request sending ``username`` on ``path`` (one of :data:`TEXT_PATHS`)."""
    if path == "query":
        return Login("GET", b"username=" + _percent(username), None, b"")
    if path == "query-raw":
        return Login("GET", b"username=" + _raw_utf8(username), None, b"")
    if path == "form":
        return Login("POST", b"", FORM, b"username=" + _percent(username))
    if path == "multipart":
        return Login("POST", b"", MULTIPART, _multipart(username.encode("utf-8", "surrogatepass")))
    return Login("POST", b"", JSON, json.dumps({"username": username}).encode())


def bytes_login(path: str, payload: bytes) -> Login:
    """The request carrying ``payload`` as the username on ``path`` (one of :data:`BYTES_PATHS`)."""
    if path == "query-bytes":
        return Login("GET", b"username=" + payload, None, b"")
    if path == "form-bytes":
        return Login("POST", b"", FORM, b"username=" + payload)
    if path == "multipart-bytes":
        return Login("POST", b"", MULTIPART, _multipart(payload))
    return Login("POST", b"", JSON, b'{"username": "' + payload + b'"}')


def is_acceptable(username: str) -> bool:
    """Whether the contract takes ``username`` (as sent, before stripping)."""
    name = username.strip()
    return (
        0 < len(name) <= MAX_LENGTH
        and "\x00" not in name
        and not any("\ud800" <= c <= "\udfff" for c in name)
        and any(c.isprintable() and c != " " and not INVISIBLE_CHARACTER.match(c) for c in name)
    )


def sent_username(path: str, payload: bytes) -> str:
    """The stripped username that ``payload`` on ``path`` (of :data:`BYTES_PATHS`) gives.

    Read with the standard library's strict decoders: it raises if there is none.
    """
    if path in ("query-bytes", "form-bytes"):
        query = (b"username=" + payload).decode()
        [value] = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "username"]
    elif path == "multipart-bytes":
        value = payload.decode()
    else:
        value = json.loads(b'{"username": "' + payload + b'"}')["username"]
    return value.strip()


def naive_fields(line: str) -> tuple[str, str, str]:
    """The text line split as a human or grep would: at the first of each label."""
    assert line.startswith(TEXT_PREFIX)
    username, _, rest = line[len(TEXT_PREFIX) :].partition(TIME_LABEL)
    time, _, ip = rest.partition(IP_LABEL)
    return username, time, ip


def strict_json(line: str) -> dict:
    """``line`` parsed as a strict JSON parser (serde_json, say) would."""
    assert "\u2028" not in line and "\u2029" not in line, "a raw line separator"

    def constant(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    data = json.loads(line, parse_constant=constant)
    for value in data.values():
        if isinstance(value, str):
            value.encode("utf-8")  # a lone surrogate raises here
    return data


def read_line(line: str, fmt: str) -> LoginRecord:
    """One log line (without its newline), checked as each of its readers would read it."""
    record = parse_line(line)
    # Nothing invisible, nothing that looks like a separator, no line break.
    assert line.isprintable() and not LOOKALIKES & set(line), line
    if fmt == "text":
        username, time, ip = naive_fields(line)
        assert (unescape(username), time, unescape(ip)) == (
            record.username,
            record.time.isoformat(sep=" ", timespec="microseconds"),
            record.ip,
        )
    else:
        data = strict_json(line)
        assert (data["username"], data["ip"]) == (record.username, record.ip)
    return record


def logged_lines(log_path: Path, fmt: str) -> list[LoginRecord]:
    """The log's records, each line checked by :func:`read_line`."""
    if not log_path.exists():
        return []
    text = log_path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    return [read_line(line, fmt) for line in text.split("\n")[:-1]]
