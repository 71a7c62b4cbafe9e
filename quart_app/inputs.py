"""Reading the username from a login request, refusing anything doubtful.

Every refusal is a :class:`BadLogin` with a 4xx status and a message for the
client; nothing refused reaches the signal, so nothing refused is logged.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

from quart import Request

MISSING = "请输入用户名"
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"
_JSON = "application/json"


class BadLogin(Exception):
    """A login request that cannot be taken, with the answer to give."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _urlencoded_usernames(raw: bytes, where: str) -> list[str]:
    # Quart decodes these leniently (bad bytes become U+FFFD, a stray % stays),
    # which would log a name the client never sent; so this parses the raw
    # bytes itself, strictly, with the standard library, in a single pass.
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


async def _from_body(request: Request) -> str | None:
    mimetype = request.mimetype
    if mimetype == _JSON:
        try:
            data = json.loads(await request.get_data(as_text=False))
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
    if mimetype == _FORM:
        body = await request.get_data(as_text=False)
        return _single(_urlencoded_usernames(body, "form body"), "form")
    if mimetype == _MULTIPART:
        return _single((await request.form).getlist("username"), "form")
    raise BadLogin(
        f"unsupported content type {mimetype!r}: send a form or JSON with a username",
        status=415,
    )


async def read_username(request: Request, max_length: int) -> str:
    """The stripped username of a GET (query string) or POST (form or JSON body).

    A POST with an empty body falls back to the query string, as GET does.
    """
    in_query = _urlencoded_usernames(request.query_string, "query string")
    username: str | None
    if request.method == "POST" and (request.content_length or request.mimetype):
        username = await _from_body(request)
    else:
        username = _single(in_query, "query string")
    username = (username or "").strip()
    if not username:
        raise BadLogin(MISSING)
    if len(username) > max_length:
        raise BadLogin(f"username is longer than {max_length} characters")
    return username
