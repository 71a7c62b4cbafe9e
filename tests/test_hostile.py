"""Hostile input: forged lines and fields, oversize, wrong types and encodings, spoofed IPs."""

from __future__ import annotations

import asyncio
import json
import string
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from quart import Quart

from quart_app import create_app
from quart_app.records import (
    FORMATTERS,
    TEXT_PREFIX,
    LoginRecord,
    escape,
    format_text,
    parse_line,
)

from helpers.logs import read_records
from helpers.payloads import (
    BOUNDARY,
    BYTES_PATHS,
    TEXT_PATHS,
    Login,
    bytes_login,
    is_acceptable,
    logged_lines,
    sent_username,
    text_login,
    usernames,
)

FORGERIES = [
    "eve\n登录日志:用户名:admin,登录时间:2020-01-01 00:00:00+00:00,ip地址:10.0.0.1",
    "eve\r\nfake",
    "eve,登录时间:2020-01-01,ip地址:1.2.3.4",
    "eve,ip地址:6.6.6.6",
    "a\\x0ab",  # a literal backslash sequence must not unescape into a newline
    "soh\x01del\x7fc1\x85\x9b",
    "ls\u2028ps\u2029",
    "bidi\u202egnp.exe\u202c\u2066\u2069\u200f\u061c",
    "tab\tesc\x1b[31mred",
]
PLAIN = ["张三", "o'brien", "Zoë", "👩 dev", "a b", "a:b", "Ελένη", "محمد"]
NOW = datetime.now(UTC)
FORMATS = sorted(FORMATTERS)
FORM = {"content-type": "application/x-www-form-urlencoded"}
JSON_TYPE = {"content-type": "application/json"}


@pytest.mark.parametrize("username", FORGERIES + PLAIN)
@pytest.mark.parametrize("fmt", ["text", "jsonl"])
async def test_no_username_forges_a_line_or_a_field(
    make_app, log_path: Path, username: str, fmt: str
) -> None:
    app = make_app(LOGIN_LOG_FORMAT=fmt)
    async with app.test_app() as test_app:
        response = await test_app.test_client().post("/login/", json={"username": username})
        assert response.status_code == 200
    raw = log_path.read_bytes()
    assert raw.count(b"\n") == 1 and raw.endswith(b"\n")
    text = raw.decode("utf-8")
    assert text.splitlines() == [text[:-1]], "a line break that str.splitlines honours"
    [record] = read_records(log_path)
    assert record.username == username.strip()
    assert record.ip == "-"  # the test client has no address ("<local>")


@pytest.mark.parametrize("username", PLAIN)
async def test_plain_names_are_written_as_they_are(app: Quart, log_path: Path, username) -> None:
    async with app.test_app() as test_app:
        await test_app.test_client().get("/login/", query_string={"username": username})
    assert log_path.read_text(encoding="utf-8").startswith(f"{TEXT_PREFIX}{username},登录时间:")


def test_escaping_reads_back_and_leaves_no_separator() -> None:
    name = "x,登录时间:y\\z\n"
    assert escape(name) == "x\\x2c登录时间:y\\\\z\\x0a"
    assert parse_line(format_text(LoginRecord(name, NOW, "1.2.3.4")).decode()).username == name


@pytest.mark.parametrize(
    "line",
    [
        "",
        "hello",
        f"{TEXT_PREFIX}no-time-field",
        "[1, 2]",
        '{"event": "logout", "username": "a", "time": "2026-11-23T00:00:00+00:00", "ip": "x"}',
        '{"event": "login", "time": "2026-11-23T00:00:00+00:00", "ip": "x"}',
        '{"event": "login", "username": "a", "time": 5, "ip": "x"}',
        '{"event": "login", "username": ["a"], "time": "2026-11-23T00:00:00+00:00", "ip": "x"}',
        f"{TEXT_PREFIX}a,登录时间:yesterday,ip地址:x",
    ],
)
def test_parse_line_refuses_what_is_not_a_login_line(line: str) -> None:
    # Log readers (the load-test tool's --verify) rely on ValueError alone.
    with pytest.raises(ValueError):
        parse_line(line)


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"json": {"username": 42}}, 400, "username must be a string, not int"),
        ({"json": {"username": ["a"]}}, 400, "username must be a string, not list"),
        ({"json": {"username": None}}, 400, "username must be a string, not null"),
        ({"json": ["username"]}, 400, "JSON body must be an object"),
        (
            {"data": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        (
            {"data": b"username=a&username=b", "headers": FORM},
            400,
            "given 2 times",
        ),
        ({"data": b"username=%ff%fe", "headers": FORM}, 400, "not valid UTF-8"),
        ({"data": b"username=%zz", "headers": FORM}, 400, "invalid percent-encoding"),
        # Parsers differ on which of two values a repeated key means.
        (
            {"data": b'{"a": 1, "a": 2, "username": "x"}', "headers": JSON_TYPE},
            400,
            "the JSON body repeats a key",
        ),
        (
            {"data": b"username=x", "headers": {"content-type": "multipart/form-data"}},
            400,
            "the multipart content type has no boundary",
        ),
        ({"data": b"<u>x</u>", "headers": {"content-type": "text/xml"}}, 415, "unsupported"),
        ({"json": {"username": "x" * 257}}, 400, "longer than 256 characters"),
    ],
)
async def test_bad_bodies_get_a_clear_4xx_and_log_nothing(
    app: Quart, log_path: Path, kwargs, status: int, message: str
) -> None:
    async with app.test_app() as test_app:
        response = await test_app.test_client().post("/login/", **kwargs)
        assert response.status_code == status
        assert message in await response.get_data(as_text=True)
    assert read_records(log_path) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (b"username=a&username=b", "given 2 times"),
        (b"username=%ff", "not valid UTF-8"),
        (b"username=%e5%bc", "not valid UTF-8"),
        (b"username=100%", "invalid percent-encoding"),
        (b"username=%g1", "invalid percent-encoding"),
        (b"username=" + b"y" * 257, "longer than 256 characters"),
    ],
)
async def test_bad_query_strings_get_400_and_log_nothing(
    app: Quart, log_path: Path, query: bytes, message: str
) -> None:
    async with app.test_app() as test_app:
        response = await test_app.test_client().get("/login/", scope_base={"query_string": query})
        assert response.status_code == 400
        assert message in await response.get_data(as_text=True)
    assert read_records(log_path) == []


async def test_exactly_the_maximum_length_is_taken(make_app, log_path: Path) -> None:
    app = make_app(USERNAME_MAX_LENGTH=10)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/login/?username=" + "z" * 10)).status_code == 200
        assert (await client.get("/login/?username=" + "z" * 11)).status_code == 400
    assert [r.username for r in read_records(log_path)] == ["z" * 10]


async def test_oversize_body_is_refused(app: Quart, log_path: Path) -> None:
    async with app.test_app() as test_app:
        body = json.dumps({"username": "a", "pad": "p" * (65 * 1024)})
        response = await test_app.test_client().post(
            "/login/", data=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
    assert read_records(log_path) == []


SPOOF_HEADERS = {
    "X-Forwarded-For": "6.6.6.6",
    "Forwarded": "for=6.6.6.6",
    "X-Real-IP": "6.6.6.6",
}


async def test_forwarding_headers_are_ignored_by_default(app: Quart, log_path: Path) -> None:
    async with app.test_app() as test_app:
        await test_app.test_client().get(
            "/login/?username=spoof",
            headers=SPOOF_HEADERS,
            scope_base={"client": ("192.0.2.10", 40000)},
        )
    assert [r.ip for r in read_records(log_path)] == ["192.0.2.10"]


@pytest.mark.parametrize(
    ("mode", "hops", "headers", "expected"),
    [
        ("legacy", 1, {"X-Forwarded-For": "6.6.6.6, 198.51.100.4"}, "198.51.100.4"),
        ("legacy", 2, {"X-Forwarded-For": "203.0.113.5, 198.51.100.4"}, "203.0.113.5"),
        ("modern", 1, {"Forwarded": "for=6.6.6.6, for=198.51.100.4"}, "198.51.100.4"),
    ],
)
async def test_trusted_proxy_hops_are_taken(
    make_app, log_path: Path, mode: str, hops: int, headers, expected: str
) -> None:
    app = make_app(PROXY_TRUSTED_HOPS=hops, PROXY_MODE=mode)
    async with app.test_app() as test_app:
        await test_app.test_client().get(
            "/login/?username=proxied",
            headers=headers,
            scope_base={"client": ("10.0.0.2", 40000)},
        )
    assert [r.ip for r in read_records(log_path)] == [expected]


def test_printable_ascii_needs_no_escape_but_comma_and_backslash() -> None:
    kept = set(string.printable) - set(string.whitespace) - {",", "\\"}
    assert all(escape(c) == c for c in kept)


# What Quart decodes before any view runs: the guard (guard.py) answers instead.
BAD_TARGETS = [
    ({"query_string": b"username=H2\xff\xfe"}, "the query string is not valid UTF-8"),
    ({"query_string": b"username=\xed\xa0\x80"}, "the query string is not valid UTF-8"),
    ({"path": ""}, "the request target has no path"),
    ({"path": "http://[x/"}, "the request target is not a valid URL"),
]


@pytest.mark.parametrize("route", ["/login/", "/", "/healthz", "/nowhere"])
@pytest.mark.parametrize(
    ("scope", "reason"), BAD_TARGETS, ids=["ff-fe", "surrogate", "empty", "url"]
)
async def test_targets_quart_cannot_decode_get_400_on_every_route(
    app: Quart, log_path: Path, route: str, scope: dict, reason: str
) -> None:
    async with app.test_app() as test_app:
        response = await test_app.test_client().get(route, scope_base=scope)
        assert response.status_code == 400
        assert await response.get_data(as_text=True) == reason
    assert read_records(log_path) == []


async def test_an_absolute_form_target_is_still_taken(app: Quart, log_path: Path) -> None:
    async with app.test_app() as test_app:
        response = await test_app.test_client().get(
            "/login/", scope_base={"path": "http://h/login/", "query_string": b"username=abs"}
        )
        assert response.status_code == 200
    assert [r.username for r in read_records(log_path)] == ["abs"]


async def asgi_websocket(app: Quart, query: bytes, extensions: dict) -> list[dict]:
    """The messages the (started) ``app`` sends for a websocket request with ``query``."""
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": "/login/",
        "raw_path": b"/login/",
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "subprotocols": [],
        "extensions": extensions,
        "state": {},
    }
    incoming = [{"type": "websocket.connect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        if incoming:
            return incoming.pop()
        await asyncio.Event().wait()  # no more messages: the client waits
        raise AssertionError

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 5)
    return sent


async def test_websocket_with_a_query_quart_cannot_decode_is_refused(app: Quart) -> None:
    async with app.test_app():
        closed = await asgi_websocket(app, b"x=\xff", {})
        sent = await asgi_websocket(app, b"x=\xff", {"websocket.http.response": {}})
    assert [(m["type"], m["code"]) for m in closed] == [("websocket.close", 1008)]
    assert [m["type"] for m in sent] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert sent[0]["status"] == 400
    assert sent[1]["body"] == b"the query string is not valid UTF-8"


async def test_a_websocket_to_the_login_route_is_refused_with_the_reason(
    app: Quart, log_path: Path
) -> None:
    # Quart answered with its HTML "Bad Request" page.
    async with app.test_app() as test_app:
        sent = await asgi_websocket(app, b"username=ws", {"websocket.http.response": {}})
        metrics = await (await test_app.test_client().get("/metrics")).get_data(as_text=True)
    assert [m["type"] for m in sent] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert sent[0]["status"] == 400
    assert sent[1]["body"] == b"a WebSocket does not log in: use GET or POST"
    assert 'quart_app_logins_refused_total{app="quart_app.app",reason="bad_request"} 1.0' in metrics
    assert read_records(log_path) == []


async def post(app: Quart, query: bytes, content_type: str | None, body: bytes) -> tuple[int, str]:
    """POST ``body`` to /login/?``query`` in process: the status and the answer."""
    headers = {"content-type": content_type} if content_type else {}
    async with app.test_app() as test_app:
        response = await test_app.test_client().post(
            "/login/", data=body, headers=headers, scope_base={"query_string": query}
        )
        return response.status_code, await response.get_data(as_text=True)


FORM_TYPE = "application/x-www-form-urlencoded"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(*fields: tuple[str, bytes]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
        for name, value in fields
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        # A 30,000-deep JSON array made json.loads raise RecursionError: a 500.
        ("application/json", b'{"a": ' + b"[" * 30_000 + b"]" * 30_000 + b', "u": 1}', "nested"),
        # Multipart decoded bad bytes as U+FFFD and logged a name nobody sent.
        (MULTIPART, multipart(("username", b"P27-surr\xed\xa0\x80")), "not valid UTF-8"),
        (MULTIPART, multipart(("username", b"bad\xff")), "not valid UTF-8"),
        (MULTIPART, b"--" + BOUNDARY.encode() + b"\r\nno headers and no end", "malformed"),
        # The last of two JSON keys won; the form and the query refuse a repeat.
        ("application/json", b'{"username": "a", "username": "b"}', "given 2 times"),
        ("application/json", b'{"username": "a", "username": "a"}', "given 2 times"),
        (MULTIPART, multipart(("username", b"a"), ("username", b"b")), "given 2 times"),
        # A lone surrogate logged in JSON Lines stalls strict parsers (serde_json).
        ("application/json", b'{"username": "\\ud800"}', "not valid Unicode"),
        ("application/json", b'{"username": "a\\udfffb"}', "not valid Unicode"),
        # A file part named username went unread beside a field of that name.
        (
            MULTIPART,
            multipart(("username", b"a"))[: -len(BOUNDARY) - 6]
            + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="username"; '
            f'filename="u.txt"\r\n\r\nb\r\n--{BOUNDARY}--\r\n'.encode(),
            "not a file",
        ),
        # Quart would hand over base64 undecoded: a name the client never sent.
        (
            MULTIPART,
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="username"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\nYWRtaW4=\r\n--{BOUNDARY}--\r\n".encode(),
            "unsupported Content-Transfer-Encoding 'base64'",
        ),
        (
            MULTIPART,
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="username"\r\n'
            f"Content-Transfer-Encoding: quoted-printable\r\n\r\n=61dmin\r\n"
            f"--{BOUNDARY}--\r\n".encode(),
            "unsupported Content-Transfer-Encoding 'quoted-printable'",
        ),
    ],
    ids=[
        "deep-json",
        "multipart-surrogate-bytes",
        "multipart-ff",
        "multipart-malformed",
        "json-duplicate",
        "json-duplicate-same",
        "multipart-duplicate",
        "json-lone-surrogate",
        "json-lone-low-surrogate",
        "multipart-file-named-username",
        "multipart-base64",
        "multipart-quoted-printable",
    ],
)
async def test_bodies_that_slipped_through_get_400_and_log_nothing(
    app: Quart, log_path: Path, content_type: str, body: bytes, reason: str
) -> None:
    status, answer = await post(app, b"", content_type, body)
    assert status == 400
    assert reason in answer
    assert read_records(log_path) == []


BODIES_WITH_A_USERNAME = {
    "form": (FORM_TYPE, b"username=same"),
    "json": ("application/json", b'{"username": "same"}'),
    "multipart": (MULTIPART, multipart(("username", b"same"))),
    "form-without-username": (FORM_TYPE, b"other=x"),
}


@pytest.mark.parametrize("kind", BODIES_WITH_A_USERNAME)
async def test_username_in_the_query_of_a_post_with_a_body_is_refused(
    app: Quart, log_path: Path, kind: str
) -> None:
    # A proxy or firewall that inspects the query would see another name than
    # the one logged; refused even when both give the same name.
    content_type, body = BODIES_WITH_A_USERNAME[kind]
    status, answer = await post(app, b"username=same", content_type, body)
    assert status == 400
    assert "in the query string of a POST with a body" in answer
    assert read_records(log_path) == []


@pytest.mark.parametrize(
    "content_type",
    [FORM_TYPE, "application/json", MULTIPART, "text/plain", "application/xml", None],
)
async def test_an_empty_post_body_falls_back_to_the_query_string(
    app: Quart, log_path: Path, content_type: str | None
) -> None:
    # curl -d '' '…/login/?username=X' sends a form content type and no body.
    assert await post(app, b"username=fallback", content_type, b"") == (200, "登录成功")
    assert [r.username for r in read_records(log_path)] == ["fallback"]


async def test_an_empty_post_body_and_no_query_is_missing(app: Quart, log_path: Path) -> None:
    assert await post(app, b"", "application/json", b"") == (400, "请输入用户名")
    assert read_records(log_path) == []


# Each path that can carry U+0000; no PostgreSQL text value can hold it.
NUL_LOGINS = [
    ("GET", b"username=a%00b", None, b""),
    ("GET", b"username=a\x00b", None, b""),
    ("POST", b"", FORM_TYPE, b"username=a%00b"),
    ("POST", b"", MULTIPART, multipart(("username", b"a\x00b"))),
    ("POST", b"", "application/json", b'{"username": "a\\u0000b"}'),
]


@pytest.mark.parametrize(
    ("method", "query", "content_type", "body"),
    NUL_LOGINS,
    ids=["query", "query-raw", "form", "multipart", "json"],
)
async def test_nul_is_refused_on_every_path(
    app: Quart, log_path: Path, method: str, query: bytes, content_type: str | None, body: bytes
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    async with app.test_app() as test_app:
        response = await test_app.test_client().open(
            "/login/", method=method, data=body, headers=headers, scope_base={"query_string": query}
        )
        assert response.status_code == 400
        assert "U+0000" in await response.get_data(as_text=True)
    assert read_records(log_path) == []


@pytest.mark.parametrize(
    "username",
    [
        "\u200b",
        "\u200b \u200b",
        "\ufeff",
        "\u3000\u200b",
        "\U000e0041\U000e007f",
        "\u2066 \u2069",
        # Printable by str.isprintable(), yet blank: Hangul fillers, the blank
        # Braille pattern, variation selectors, the combining grapheme joiner.
        "\u3164",
        "\u115f\u1160\uffa0",
        "\u2800 \u2800",
        "\u034f\ufe0f\U000e0100",
        "\u17b4\u180b",
    ],
)
@pytest.mark.parametrize("fmt", ["text", "jsonl"])
async def test_a_username_of_invisible_characters_only_is_missing(
    make_app, log_path: Path, username: str, fmt: str
) -> None:
    app = make_app(LOGIN_LOG_FORMAT=fmt)
    body = json.dumps({"username": username}).encode()
    assert await post(app, b"", "application/json", body) == (400, "请输入用户名")
    assert read_records(log_path) == []


@settings(max_examples=150, deadline=None)
@given(path=st.sampled_from(TEXT_PATHS), username=usernames, fmt=st.sampled_from(FORMATS))
def test_property_any_username_on_any_path_gives_one_exact_line_or_a_4xx(
    tmp_path_factory: pytest.TempPathFactory, path: str, username: str, fmt: str
) -> None:
    log_path = tmp_path_factory.mktemp("prop") / "login_log.txt"
    status, answer = asyncio.run(send_in_process(log_path, fmt, text_login(path, username)))
    records = logged_lines(log_path, fmt)
    if is_acceptable(username):
        assert (status, answer) == (200, "登录成功")
        assert [r.username for r in records] == [username.strip()]
    else:
        assert 400 <= status < 500, answer
        assert records == []


@settings(max_examples=100, deadline=None)
@given(
    path=st.sampled_from(BYTES_PATHS),
    payload=st.binary(max_size=300) | usernames.map(lambda u: u.encode("utf-8", "surrogatepass")),
    fmt=st.sampled_from(FORMATS),
)
def test_property_any_bytes_on_any_path_give_one_line_of_what_was_sent_or_a_4xx(
    tmp_path_factory: pytest.TempPathFactory, path: str, payload: bytes, fmt: str
) -> None:
    log_path = tmp_path_factory.mktemp("prop") / "login_log.txt"
    login = bytes_login(path, payload)
    status, answer = asyncio.run(send_in_process(log_path, fmt, login))
    records = logged_lines(log_path, fmt)
    assert status < 500, answer
    if status == 200:
        [record] = records
        assert record.username == sent_username(path, payload)
    else:
        assert records == []


async def send_in_process(log_path: Path, fmt: str, login: Login) -> tuple[int, str]:
    """Send ``login`` through Quart's test client to a new app logging to ``log_path``."""
    app = create_app({"LOGIN_LOG_PATH": str(log_path), "LOGIN_LOG_FORMAT": fmt})
    headers = {"content-type": login.content_type} if login.content_type else {}
    async with app.test_app() as test_app:
        response = await test_app.test_client().open(
            "/login/",
            method=login.method,
            data=login.body,
            headers=headers,
            scope_base={"query_string": login.query},
        )
        return response.status_code, await response.get_data(as_text=True)


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
async def test_a_method_quart_answers_itself_logs_nobody_in_and_is_refused(
    app: Quart, log_path: Path, method: str
) -> None:
    # Quart answers OPTIONS 200 with an empty body on its own: a 200 that logged nobody in.
    async with app.test_app() as test_app:
        response = await test_app.test_client().open(
            f"/login/?username={method.lower()}", method=method
        )
        assert response.status_code == 405
        assert set(response.headers["Allow"].split(", ")) == {"GET", "POST"}
        if method != "HEAD":
            assert await response.get_data(as_text=True) == (
                f"{method} does not log in: use GET or POST"
            )
    assert read_records(log_path) == []


async def test_a_get_with_a_body_is_refused(app: Quart, log_path: Path) -> None:
    # The body names another user than the query: which one logged in?
    async with app.test_app() as test_app:
        response = await test_app.test_client().get(
            "/login/?username=query-user",
            data=b"username=body-user",
            headers={"content-type": FORM_TYPE, "content-length": "18"},
        )
        assert response.status_code == 400
        assert "has no body" in await response.get_data(as_text=True)
    assert read_records(log_path) == []
