"""LoginAudit misused by an app: each mistake is refused loudly, never a 200 with nothing
logged, never a line in another app's log, never a 500 for what a client sent."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from quart import Blueprint, Quart, request
from quart.testing.app import LifespanError

from quart_app import LoginAudit, LogUnavailable, OutsideRequest, login_signal, routes
from quart_app import probes as probes_module
from quart_app.serving import prepare_for_hypercorn
from quart_app.stores.file import FileStore
from quart_app.tools.server import free_port

from helpers.logs import read_records, wait_for_records


def audited(log: Path, name: str = "user_app") -> Quart:
    """An audited app whose /json sends the signal with the JSON body's ``user``."""
    app = Quart(name)
    app.config["LOGIN_LOG_PATH"] = str(log)
    LoginAudit(app)

    @app.post("/json")
    async def by_json() -> str:
        await login_signal.send_async(app, username=(await request.get_json())["user"])
        return "welcome"

    return app


def usernames(log: Path) -> list[str]:
    return [record.username for record in read_records(log)]


@pytest.mark.parametrize("value", [123, True, ["x"], {"a": "b"}, 1.5])
async def test_a_username_that_is_not_text_is_400_not_500(tmp_path: Path, value: Any) -> None:
    app = audited(tmp_path / "a.log")
    async with app.test_app() as test_app:
        answer = await test_app.test_client().post("/json", json={"user": value})
        body = await answer.get_data(as_text=True)
    assert (answer.status_code, body) == (400, "username must be text")
    assert usernames(tmp_path / "a.log") == []


@pytest.fixture
def any_sender_receiver() -> Any:
    heard: list[tuple[object, str]] = []

    def notify(sender: object, *, username: str) -> None:
        heard.append((sender, username))

    login_signal.connect(notify)  # blinker's default: every sender
    yield heard
    login_signal.disconnect(notify)


async def test_a_sender_that_is_not_an_audited_app_raises_even_with_other_receivers(
    tmp_path: Path, any_sender_receiver: list[tuple[object, str]]
) -> None:
    app = audited(tmp_path / "a.log")
    blueprint = Blueprint("auth", __name__)
    async with app.test_app(), app.test_request_context("/signin", method="POST"):
        for sender in (blueprint, None, app.name):
            with pytest.raises(LookupError, match="nothing records logins sent by"):
                await login_signal.send_async(sender, username="ann")
        with login_signal.muted(), pytest.raises(LookupError, match="muted"):
            await login_signal.send_async(app, username="ann")
        await login_signal.send_async(app, username="bob")
    assert any_sender_receiver == [(app, "bob")]  # heard only what was recorded
    await wait_for_records(tmp_path / "a.log", 1)
    assert usernames(tmp_path / "a.log") == ["bob"]


async def test_a_login_sent_with_another_app_than_the_one_serving_the_request_raises(
    tmp_path: Path, any_sender_receiver: list[tuple[object, str]]
) -> None:
    first, second = audited(tmp_path / "a.log", "a"), audited(tmp_path / "b.log", "b")
    unaudited = Quart("c")

    @first.post("/wrong")
    async def wrong() -> str:
        await login_signal.send_async(second, username="misattributed")
        return "welcome"

    @unaudited.post("/wrong")
    async def wrong_too() -> str:
        await login_signal.send_async(first, username="from-c")
        return "welcome"

    async with first.test_app() as a, second.test_app(), unaudited.test_app() as c:
        answer = await a.test_client().post("/wrong")
        assert answer.status_code == 500
        assert (await c.test_client().post("/wrong")).status_code == 500
    with pytest.raises(LookupError, match="while the app 'a' handles the request"):
        async with first.test_request_context("/wrong", method="POST"):
            await login_signal.send_async(second, username="misattributed")
    assert usernames(tmp_path / "a.log") == usernames(tmp_path / "b.log") == []
    assert any_sender_receiver == []


async def test_error_handlers_the_app_registered_first_are_kept(tmp_path: Path) -> None:
    app = Quart("user_app")
    app.config.update(LOGIN_LOG_PATH=str(tmp_path / "a.log"), LOGIN_LOG_DURABLE=True)

    @app.errorhandler(LogUnavailable)
    async def mine(error: LogUnavailable) -> tuple[str, int]:
        return "our own 503", 503

    class Failing(FileStore):
        async def write(self, batch: Any) -> Any:
            raise OSError(5, "Input/output error")

    app.config.update(LOGIN_LOG_FULL_TIMEOUT=0.2, LOGIN_LOG_DRAIN_TIMEOUT=0.2)
    LoginAudit(app, store_factory=lambda settings: Failing(settings.login_log_path))

    @app.get("/signin")
    async def signin() -> str:
        await login_signal.send_async(app, username="ann")
        return "welcome"

    async with app.test_app() as test_app:
        answer = await test_app.test_client().get("/signin")
        assert (answer.status_code, await answer.get_data(as_text=True)) == (503, "our own 503")
        assert "Retry-After" not in answer.headers


async def test_an_async_callable_object_receiver_is_awaited(tmp_path: Path) -> None:
    app = audited(tmp_path / "a.log")
    heard: list[str] = []

    class Notifier:
        async def __call__(self, sender: object, *, username: str) -> None:
            heard.append(username)

    notifier = Notifier()
    login_signal.connect(notifier, sender=app)
    try:
        async with app.test_app() as test_app:
            answer = await test_app.test_client().post("/json", json={"user": "ann"})
            assert answer.status_code == 200
    finally:
        login_signal.disconnect(notifier)
    assert heard == ["ann"]


async def test_log_login_outside_any_app_context_says_why(tmp_path: Path) -> None:
    audit = LoginAudit()
    audit.init_app(Quart("user_app"))
    with pytest.raises(OutsideRequest, match="inside the request that logs in"):
        await audit.log_login("background")


async def test_an_app_served_twice_at_once_is_refused_and_the_first_serve_keeps_logging(
    tmp_path: Path,
) -> None:
    app = audited(tmp_path / "a.log")
    async with app.test_app() as outer:
        with pytest.raises(LifespanError, match="already being served"):
            async with app.test_app():
                pass
        answer = await outer.test_client().post("/json", json={"user": "ann"})
        assert answer.status_code == 200
        await wait_for_records(tmp_path / "a.log", 1)
    assert usernames(tmp_path / "a.log") == ["ann"]


@pytest.mark.parametrize("what", ["the probes", "the login routes"])
async def test_the_blueprints_without_login_audit_refuse_to_start_saying_why(what: str) -> None:
    app = Quart("user_app")
    app.register_blueprint(
        {"the probes": probes_module, "the login routes": routes}[what].blueprint
    )
    with pytest.raises(LifespanError, match=f"{what} need LoginAudit"):
        async with app.test_app():
            pass


async def test_prepare_for_hypercorn_is_quiet_when_not_served_by_hypercorn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = audited(tmp_path / "a.log")
    prepare_for_hypercorn(app)
    with caplog.at_level(logging.WARNING):
        for name in ("first", "second"):
            async with app.test_app() as test_app:
                answer = await test_app.test_client().post("/json", json={"user": name})
                assert answer.status_code == 200
        await asyncio.sleep(10.5)  # the worker context was looked for for 10 s
    assert caplog.records == []
    assert usernames(tmp_path / "a.log") == ["first", "second"]


def test_prepare_for_hypercorn_under_app_run_stops_gracefully_and_quietly(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "runapp.py").write_text(
        "from quart import Quart\n"
        "from quart_app import LoginAudit, login_signal\n"
        "from quart_app.serving import prepare_for_hypercorn\n"
        "app = Quart(__name__)\n"
        "app.config['LOGIN_LOG_PATH'] = 'audit.log'\n"
        "LoginAudit(app)\n"
        "prepare_for_hypercorn(app)\n"
        "@app.get('/signin')\n"
        "async def signin():\n"
        "    await login_signal.send_async(app, username='ann')\n"
        "    return 'welcome'\n"
        f"app.run(port={port})\n"
    )
    process = subprocess.Popen(
        [sys.executable, "runapp.py"], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{port}/signin", timeout=2) as r:
                    assert r.read() == b"welcome"
                break
            except OSError:
                assert time.monotonic() < deadline, "app.run() did not answer within 20 s"
                time.sleep(0.1)
        time.sleep(10.5)  # the worker context was looked for for 10 s
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "worker context" not in err and "Traceback" not in err, err
    assert usernames(tmp_path / "audit.log") == ["ann"]


async def test_outside_a_request_no_receiver_hears_the_login(
    tmp_path: Path, any_sender_receiver: list[tuple[object, str]]
) -> None:
    app = audited(tmp_path / "a.log")

    @app.websocket("/ws")
    async def ws() -> None:
        await login_signal.send_async(app, username="over-a-websocket")

    async with app.test_app() as test_app:
        async with app.app_context():
            with pytest.raises(OutsideRequest):
                await login_signal.send_async(app, username="in-an-app-context")
        with pytest.raises(Exception):  # noqa: B017 (the test client re-raises it)
            async with test_app.test_client().websocket("/ws") as socket:
                await socket.receive()
    assert any_sender_receiver == []
    assert usernames(tmp_path / "a.log") == []
