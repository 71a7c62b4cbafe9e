"""LoginAudit in a user's own Quart app: the README's example, run as it is written."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from quart import Blueprint, Quart, current_app, request
from quart_auth import AuthUser, QuartAuth, login_user

from quart_app import (
    BadUsername,
    ConfigError,
    LoginAudit,
    LogUnavailable,
    OutsideRequest,
    login_signal,
)
from quart_app import probes as probes_module
from quart_app.records import LoginRecord, parse_line
from quart_app.stores.file import FileStore

from helpers.logs import read_records, wait_for_records
from helpers.server import ROOT, Server, run_server

GUIDE = "## Use it in your own Quart app"


def readme_blocks() -> list[str]:
    """The Python blocks of the README's guide to using it in one's own app, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(GUIDE, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def user_app_module(tmp_path: Path, *, one_liner: bool = False) -> str:
    """Write the README's example (and its serving line) as ``yourapp.py``; its module name."""
    blocks = readme_blocks()
    code = blocks[0] + (blocks[1] if one_liner else "")
    (tmp_path / "yourapp.py").write_text(code, encoding="utf-8")
    return "yourapp"


def load_user_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Quart:
    monkeypatch.chdir(tmp_path)  # LOGIN_LOG_PATH is "audit.log": relative to where it runs
    namespace: dict[str, Any] = {"__name__": "yourapp"}
    exec(compile(readme_blocks()[0], "README.md", "exec"), namespace)
    return namespace["app"]


def usernames(path: Path) -> list[str]:
    return [record.username for record in read_records(path)]


async def test_the_readme_example_logs_a_right_password_once_and_a_wrong_one_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = load_user_app(tmp_path, monkeypatch)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        wrong = await client.post("/signin", form={"user": "mallory", "password": "wrong"})
        assert (wrong.status_code, await wrong.get_data(as_text=True)) == (401, "no")
        right = await client.post("/signin", form={"user": "张三", "password": "right"})
        assert (right.status_code, await right.get_data(as_text=True)) == (200, "welcome")
        assert "QUART_AUTH" in right.headers.get("Set-Cookie", "")
        await wait_for_records(tmp_path / "audit.log", 1)
    assert usernames(tmp_path / "audit.log") == ["张三"]


class UnconfirmedStore(FileStore):
    """A file whose writes fail: nothing is ever confirmed."""

    async def write(self, batch: Any) -> Any:
        raise OSError(5, "Input/output error")


async def test_a_login_the_log_cannot_confirm_is_503_and_logs_nobody_in(tmp_path: Path) -> None:
    # The README's example, durable, on a store that never confirms.
    app = Quart(__name__)
    app.secret_key = "change me"
    app.config.update(
        LOGIN_LOG_PATH=str(tmp_path / "audit.log"),
        LOGIN_LOG_DURABLE=True,
        LOGIN_LOG_FULL_TIMEOUT=0.2,
        LOGIN_LOG_DRAIN_TIMEOUT=0.2,
    )
    QuartAuth(app)
    LoginAudit(app, store_factory=lambda settings: UnconfirmedStore(settings.login_log_path))

    @app.post("/signin")
    async def signin() -> str:
        form = await request.form
        await login_signal.send_async(app, username=form["user"])
        login_user(AuthUser(form["user"]))
        return "welcome"

    async with app.test_app() as test_app:
        answer = await test_app.test_client().post(
            "/signin", form={"user": "ann", "password": "right"}
        )
        body = await answer.get_data(as_text=True)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    assert body.startswith("登录失败, 请稍后再试 (login not confirmed:")
    assert "Set-Cookie" not in answer.headers  # nobody logged in
    assert usernames(tmp_path / "audit.log") == []


def make_user_app(log: Path, name: str = "user_app", **config: Any) -> Quart:
    """An app whose /signin sends the signal with ``current_app``, a proxy."""
    app = Quart(name)
    app.config.update(LOGIN_LOG_PATH=str(log), **config)

    @app.post("/signin")
    async def signin() -> str:
        await login_signal.send_async(current_app, username=(await request.form)["user"])
        return "welcome"

    return app


async def test_one_audit_serves_two_apps_each_logging_only_its_own(tmp_path: Path) -> None:
    audit = LoginAudit()
    app_a, app_b = make_user_app(tmp_path / "a.log", "a"), make_user_app(tmp_path / "b.log", "b")
    audit.init_app(app_a)
    audit.init_app(app_b)
    async with app_a.test_app() as test_a, app_b.test_app() as test_b:
        client_a, client_b = test_a.test_client(), test_b.test_client()
        for i in range(3):
            assert (await client_a.post("/signin", form={"user": f"a{i}"})).status_code == 200
            assert (await client_b.post("/signin", form={"user": f"b{i}"})).status_code == 200
        await wait_for_records(tmp_path / "a.log", 3)
        await wait_for_records(tmp_path / "b.log", 3)
    # Sent with current_app, a proxy: resolved to the app, not lost under another sender.
    assert usernames(tmp_path / "a.log") == ["a0", "a1", "a2"]
    assert usernames(tmp_path / "b.log") == ["b0", "b1", "b2"]


async def test_log_login_records_as_the_signal_does(tmp_path: Path) -> None:
    app = make_user_app(tmp_path / "a.log")
    audit = LoginAudit(app)

    @app.get("/by-method")
    async def by_method() -> str:
        await audit.log_login(request.args["user"])
        return "welcome"

    async with app.test_app() as test_app:
        answer = await test_app.test_client().get("/by-method?user=%20ann%20")
        assert answer.status_code == 200
        await wait_for_records(tmp_path / "a.log", 1)
    assert usernames(tmp_path / "a.log") == ["ann"]  # stripped, as every username


@pytest.mark.parametrize(
    ("username", "reason"),
    [
        ("", "请输入用户名"),
        ("\u200b ", "请输入用户名"),
        ("x" * 257, "username is longer than 256 characters"),
        ("a\x00b", "username must not contain U+0000 (NUL)"),
    ],
)
async def test_a_refused_username_is_400_with_the_reason_and_reaches_no_receiver(
    tmp_path: Path, username: str, reason: str
) -> None:
    app = make_user_app(tmp_path / "a.log")
    LoginAudit(app)
    heard: list[str] = []

    async def other_receiver(sender: object, *, username: str) -> None:
        heard.append(username)

    login_signal.connect(other_receiver, sender=app)
    try:
        async with app.test_app() as test_app:
            answer = await test_app.test_client().post("/signin", form={"user": username})
            assert (answer.status_code, await answer.get_data(as_text=True)) == (400, reason)
    finally:
        login_signal.disconnect(other_receiver)
    assert heard == []
    assert usernames(tmp_path / "a.log") == []


async def test_the_app_may_answer_refusals_its_own_way(tmp_path: Path) -> None:
    app = make_user_app(tmp_path / "a.log")
    LoginAudit(app)

    @app.errorhandler(BadUsername)
    async def own_400(error: BadUsername) -> tuple[str, int]:
        return f"try again: {error.message}", 422

    async with app.test_app() as test_app:
        answer = await test_app.test_client().post("/signin", form={"user": " "})
        assert (answer.status_code, await answer.get_data(as_text=True)) == (
            422,
            "try again: 请输入用户名",
        )


async def test_a_login_sent_outside_a_request_says_why_and_logs_nothing(tmp_path: Path) -> None:
    app = make_user_app(tmp_path / "a.log")
    LoginAudit(app)
    async with app.test_app(), app.app_context():
        with pytest.raises(OutsideRequest, match="inside the request that logs in"):
            await login_signal.send_async(app, username="background")
    assert usernames(tmp_path / "a.log") == []


def test_a_bad_setting_is_refused_at_init_app_naming_its_key(tmp_path: Path) -> None:
    app = make_user_app(tmp_path / "a.log", LOGIN_LOG_MAX_PENDING="lots")
    with pytest.raises(ConfigError, match="LOGIN_LOG_MAX_PENDING must be a whole number"):
        LoginAudit(app)


async def test_an_app_is_served_twice_and_logs_both_times(tmp_path: Path) -> None:
    app = make_user_app(tmp_path / "a.log")
    LoginAudit(app)
    for name in ("first", "second"):
        async with app.test_app() as test_app:
            answer = await test_app.test_client().post("/signin", form={"user": name})
            assert answer.status_code == 200
    assert usernames(tmp_path / "a.log") == ["first", "second"]


async def test_probes_are_added_only_when_asked_under_the_prefix_given(tmp_path: Path) -> None:
    app = make_user_app(tmp_path / "a.log")
    LoginAudit(app)
    async with app.test_app() as test_app:
        assert (await test_app.test_client().get("/healthz")).status_code == 404
    app = make_user_app(tmp_path / "b.log", "b")
    LoginAudit(app)
    app.register_blueprint(probes_module.blueprint, url_prefix="/internal")
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/internal/readyz")).status_code == 200
        assert (await client.get("/healthz")).status_code == 404


def test_log_unavailable_is_the_503_exception(tmp_path: Path) -> None:
    app = make_user_app(tmp_path / "a.log")
    LoginAudit(app)
    assert LogUnavailable in app.error_handler_spec[None][None]


# Served by real hypercorn, as a user would: ``hypercorn yourapp:app``.


async def sign_in(
    url: str, names: Sequence[str], password: str = "right", *, on_half: Any = None
) -> dict[str, int]:
    """POST /signin for each name, 50 at a time; each name's status (0: no answer)."""
    statuses: dict[str, int] = {}
    half = len(names) // 2
    limit = asyncio.Semaphore(50)

    async def one(session: aiohttp.ClientSession, name: str) -> None:
        async with limit:
            try:
                form = {"user": name, "password": password}
                async with session.post(f"{url}/signin", data=form) as answer:
                    await answer.read()
                    statuses[name] = answer.status
            except aiohttp.ClientError:
                statuses[name] = 0
            if on_half is not None and len(statuses) == half:
                on_half()

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session, name) for name in names))
    return statuses


def serve_user_app(tmp_path: Path, *, workers: int | None = None, one_liner: bool = False) -> Any:
    module = user_app_module(tmp_path, one_liner=one_liner)
    return run_server(tmp_path, {}, workers=workers, app=f"{module}:app", cwd=tmp_path)


def lines_of(log: Path) -> list[LoginRecord]:
    text = log.read_text(encoding="utf-8") if log.exists() else ""
    assert text == "" or text.endswith("\n")
    return [parse_line(line) for line in text.splitlines()]


def stopped(server: Server) -> int:
    return server.process.wait(timeout=40)


async def test_served_by_hypercorn_a_right_password_is_one_line_with_the_peer_address(
    tmp_path: Path,
) -> None:
    with serve_user_app(tmp_path, workers=0) as server:
        assert (await sign_in(server.url, ["mallory"], "wrong")) == {"mallory": 401}
        assert (await sign_in(server.url, ["张三"])) == {"张三": 200}
        server.signal_group(signal.SIGTERM)
        assert stopped(server) == 0, server.stderr
    [record] = lines_of(tmp_path / "audit.log")
    assert (record.username, record.ip) == ("张三", "127.0.0.1")


@pytest.mark.parametrize(("workers", "one_liner"), [(0, False), (0, True), (2, True)])
async def test_served_by_hypercorn_sigterm_mid_load_loses_no_acknowledged_login(
    tmp_path: Path, workers: int, one_liner: bool
) -> None:
    names = [f"u{i}" for i in range(600)]
    with serve_user_app(tmp_path, workers=workers, one_liner=one_liner) as server:
        statuses = await sign_in(
            server.url, names, on_half=lambda: server.signal_group(signal.SIGTERM)
        )
        assert stopped(server) == 0, server.stderr
    acknowledged = sorted(name for name, status in statuses.items() if status == 200)
    assert acknowledged, statuses
    assert set(statuses.values()) <= {200, 503, 0}, statuses
    logged = [record.username for record in lines_of(tmp_path / "audit.log")]
    assert len(logged) == len(set(logged)), "a login logged twice"
    assert set(acknowledged) <= set(logged), "an acknowledged login is missing"
    assert "Traceback" not in server.stderr


async def test_with_two_workers_and_the_one_liner_a_worker_sigterm_loses_nothing(
    tmp_path: Path,
) -> None:
    # Without it, hypercorn's worker dies at once on SIGTERM with what it queued.
    names = [f"w{i}" for i in range(600)]
    with serve_user_app(tmp_path, workers=2, one_liner=True) as server:
        workers = server.workers()
        assert len(workers) >= 2
        statuses = await sign_in(
            server.url, names, on_half=lambda: workers[0].send_signal(signal.SIGTERM)
        )
        server.signal_group(signal.SIGTERM)
        assert stopped(server) == 0, server.stderr
    acknowledged = {name for name, status in statuses.items() if status == 200}
    logged = [record.username for record in lines_of(tmp_path / "audit.log")]
    assert len(logged) == len(set(logged))
    assert acknowledged <= set(logged)


def test_quart_keys_are_the_apps_own_business(tmp_path: Path) -> None:
    # Quart's "no limit": the extension neither checks nor needs it.
    app = make_user_app(tmp_path / "a.log", MAX_CONTENT_LENGTH=None)
    LoginAudit(app)
    assert app.config["MAX_CONTENT_LENGTH"] is None


def test_a_nul_in_the_log_path_is_refused_at_init_app_naming_its_key(tmp_path: Path) -> None:
    app = make_user_app(tmp_path / "a\x00.log")
    with pytest.raises(ConfigError, match="LOGIN_LOG_PATH must be a file path"):
        LoginAudit(app)


@pytest.mark.parametrize("sender", ["blueprint", None, "app name"])
async def test_a_login_sent_with_a_sender_nothing_hears_raises(
    tmp_path: Path, sender: str | None
) -> None:
    # Else the login is recorded nowhere and the caller logs the user in all the same.
    app = make_user_app(tmp_path / "a.log")
    LoginAudit(app)
    senders = {"blueprint": Blueprint("bp", __name__), None: None, "app name": app.name}
    async with app.test_app(), app.test_request_context("/signin"):
        with pytest.raises(LookupError, match="nothing records logins sent by"):
            await login_signal.send_async(senders[sender], username="ann")
        with pytest.raises(TypeError, match="send_async"):
            login_signal.send(current_app, username="ann")
    assert usernames(tmp_path / "a.log") == []


async def test_with_the_one_liner_a_hostile_host_is_400_with_the_reason(tmp_path: Path) -> None:
    # werkzeug's IDNA check of the Host fails while routing, before any handler runs.
    with serve_user_app(tmp_path, workers=0, one_liner=True) as server:
        host, port = server.url.removeprefix("http://").split(":")
        for hostile in (b"a..b", b"x" * 70 + b".example"):
            reader, writer = await asyncio.open_connection(host, int(port))
            body = b"user=x&password=right"
            writer.write(
                b"POST /signin HTTP/1.1\r\nHost: " + hostile + b"\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
            )
            await writer.drain()
            async with asyncio.timeout(10):
                answer = await reader.read()
            writer.close()
            assert answer.startswith(b"HTTP/1.1 400"), answer
            assert answer.endswith(b"the Host header is not a valid host name"), answer
        server.signal_group(signal.SIGTERM)
        assert stopped(server) == 0
    assert "Traceback" not in server.stderr
    assert not (tmp_path / "audit.log").exists() or lines_of(tmp_path / "audit.log") == []
