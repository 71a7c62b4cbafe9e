"""Reading the username from a login request, and checking it, refusing anything doubtful.

Every refusal is a :class:`BadLogin` with a 4xx status and a message for the
client. The route reads the name (:func:`username_of`); the signal checks it
(:func:`check_username`) before any receiver runs, so nothing refused is logged.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from quart import Request
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder

from .records import INVISIBLE_CHARACTER

MISSING = "请输入用户名"
DEFAULT_MAX_LENGTH = 256
"""The longest username taken when ``USERNAME_MAX_LENGTH`` is not set."""
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_PLAIN_FIELD = re.compile(rb"username=([^&%+]*)")
_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"
_JSON = "application/json"
# The part charsets Quart's own multipart parser honours; UTF-8 otherwise.
_PART_CHARSETS = {"ascii": "ascii", "us-ascii": "ascii", "iso-8859-1": "iso-8859-1"}
_PLAIN_ENCODINGS = {"7bit", "8bit", "binary"}
_BODY_HEADERS = {b"content-length", b"transfer-encoding"}


class BadLogin(Exception):
    """A login request that cannot be taken, with the answer to give."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class BadUsername(BadLogin):
    """A username the audit refuses (empty, too long, NUL, ...): answer 400 with the message."""


def _urlencoded_usernames(raw: bytes, where: str) -> list[str]:
    # Quart decodes these leniently (bad bytes become U+FFFD, a stray % stays),
    # which would log a name the client never sent; so this parses the raw
    # bytes itself, strictly, with the standard library, in a single pass.
    if plain := _PLAIN_FIELD.fullmatch(raw):
        # The usual login: one field, nothing encoded; what parse_qsl would give.
        try:
            return [plain[1].decode()]
        except UnicodeDecodeError:
            raise BadLogin(f"the {where} is not valid UTF-8") from None
    if _BAD_PERCENT.search(raw):
        raise BadLogin(f"invalid percent-encoding in the {where}")
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise BadLogin(f"the {where} is not valid UTF-8") from None
    return [value for name, value in pairs if name == "username"]


def _single(found: list[str], where: str) -> str | None:
    if len(found) > 1:
        raise BadLogin(f"username is given {len(found)} times in the {where}; give it once")
    return found[0] if found else None


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of repeated keys; the form and the query refuse
    # a repeated field, so JSON does too.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        times = sum(name == "username" for name, _ in pairs)
        if times > 1:
            raise BadLogin(f"username is given {times} times in the JSON body; give it once")
        raise BadLogin("the JSON body repeats a key")
    return obj


def _from_json(body: bytes) -> str | None:
    try:
        data = json.loads(body, object_pairs_hook=_json_object)
    except RecursionError:  # the C parser's depth limit: no 500 for [[[[...]]]]
        raise BadLogin("the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise BadLogin("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadLogin('the JSON body must be an object such as {"username": "..."}')
    value = data.get("username")
    if value is not None and not isinstance(value, str):
        raise BadLogin(f"username must be a string, not {type(value).__name__}")
    if "username" in data and value is None:
        raise BadLogin("username must be a string, not null")
    return value


def _from_multipart(body: bytes, boundary: str) -> str | None:
    # Quart's parser decodes fields with errors="replace" (a name nobody sent,
    # with U+FFFD in it) and reads a malformed body as an empty form; werkzeug's
    # decoder, which it is built on, is driven here strictly instead.
    found: list[str] = []
    field: Field | None = None
    chunks: list[bytes] = []
    try:
        decoder = MultipartDecoder(boundary.encode("latin-1"))
        decoder.receive_data(body)
        decoder.receive_data(None)  # all there is: a truncated body raises ValueError
        while not isinstance(event := decoder.next_event(), Epilogue):
            if isinstance(event, Field):
                field, chunks = event, []
                if event.name == "username":
                    _check_part(event)
            elif isinstance(event, File) and event.name == "username":
                raise BadLogin("username must be a form field, not a file")
            elif isinstance(event, Data) and field is not None and field.name == "username":
                chunks.append(event.data)
                if not event.more_data:
                    charset = parse_options_header(field.headers.get("content-type"))[1]
                    codec = _PART_CHARSETS.get(charset.get("charset", "").lower(), "utf-8")
                    found.append(b"".join(chunks).decode(codec))
            elif not isinstance(event, Data):  # the preamble or a file part
                field = None
    except UnicodeDecodeError:
        raise BadLogin("the form body is not valid UTF-8") from None
    except ValueError:
        raise BadLogin("the multipart body is malformed") from None
    return _single(found, "form")


def _check_part(field: Field) -> None:
    # Quart would hand over base64 or quoted-printable text undecoded: a name
    # the client never sent.
    encoding = field.headers.get("content-transfer-encoding", "binary").strip().lower()
    if encoding not in _PLAIN_ENCODINGS:
        raise BadLogin(f"unsupported Content-Transfer-Encoding {encoding!r} in the form")


def _from_body(request: Request, body: bytes) -> str | None:
    mimetype = request.mimetype
    if mimetype == _JSON:
        return _from_json(body)
    if mimetype == _FORM:
        return _single(_urlencoded_usernames(body, "form body"), "form")
    if mimetype == _MULTIPART:
        if not (boundary := request.mimetype_params.get("boundary")):
            raise BadLogin("the multipart content type has no boundary")
        return _from_multipart(body, boundary)
    raise BadLogin(
        f"unsupported content type {mimetype!r}: send a form or JSON with a username",
        status=415,
    )


def check_username(username: object, max_length: int = DEFAULT_MAX_LENGTH) -> str:
    """``username`` stripped, or :class:`BadUsername` saying why it cannot be logged.

    Refused: anything but a ``str``, nothing visible (``None`` included), more
    than ``max_length`` characters, a lone surrogate, a NUL.
    """
    if username is None:
        raise BadUsername(MISSING)
    if not isinstance(username, str):  # a number or a list from a JSON body, say
        raise BadUsername("username must be text")
    username = username.strip()
    if not username:
        raise BadUsername(MISSING)
    if len(username) > max_length:
        raise BadUsername(f"username is longer than {max_length} characters")
    # A stripped, printable name without invisible characters is fine: its
    # first character is visible. Only names with a control, format,
    # private-use, unassigned, separator or invisible character (or a lone
    # surrogate) pay for the checks below; no invisible character is ASCII.
    if username.isprintable() and (username.isascii() or not INVISIBLE_CHARACTER.search(username)):
        return username
    try:
        username.encode()
    except UnicodeEncodeError:  # strict JSON parsers refuse a logged lone surrogate
        raise BadUsername("username is not valid Unicode text (a lone surrogate)") from None
    if "\x00" in username:  # no PostgreSQL text value can hold it
        raise BadUsername("username must not contain U+0000 (NUL)")
    if not any(map(str.isprintable, INVISIBLE_CHARACTER.sub("", username.replace(" ", "")))):
        raise BadUsername(MISSING)  # nothing visible: only spaces and invisible characters
    return username


def needs_body(request: Request) -> bool:
    """Whether the login's body must be read: a POST, or a GET that says it has one.

    A body beside a GET's query string would be a second, unread name, so it
    is read to be refused. The ASGI scope's own header names, lower-case bytes,
    are the cheapest to look through: werkzeug's Headers lower-cases every name
    per lookup, and this runs for every login.
    """
    if request.method == "POST":
        return True
    # A plain loop: any() over a generator costs a resumption per header.
    for name, _ in request.scope["headers"]:  # noqa: SIM110
        if name in _BODY_HEADERS:
            return True
    return False


def username_of(request: Request, body: bytes) -> str:
    """The username of a GET (query string) or POST (form or JSON ``body``), as sent.

    Empty when none is given; :func:`check_username` decides whether it can be logged.

    ``body`` is the request's whole body (empty when :func:`needs_body` said
    there was none to read). A POST with an empty body, whatever its content
    type, falls back to the query string, as GET does; a POST with a body
    takes the username from the body only, and refuses one in the query
    string too.
    """
    in_query = _urlencoded_usernames(request.query_string, "query string")
    if request.method != "POST":
        if body:
            raise BadLogin("a GET login has no body: send the username in the query string")
        return _single(in_query, "query string") or ""
    if body:
        if in_query:
            raise BadLogin(
                "username is in the query string of a POST with a body; send it in the body only"
            )
        username = _from_body(request, body)
    else:
        username = _single(in_query, "query string")
    return username or ""
