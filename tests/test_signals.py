"""The login signal: its sender, other receivers, app isolation, weak references."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import pytest
from quart import Quart, request
from werkzeug.exceptions import Forbidden

from quart_app import create_app
from quart_app.signals import login_signal

from helpers.logs import read_records, wait_for_records


async def test_own_sync_and_async_receivers_get_the_app_as_sender(
    app: Quart, log_path: Path
) -> None:
    seen: list[tuple[str, object, str, str, bool]] = []

    def sync_receiver(sender: object, *, username: str) -> None:
        # Inline on the loop thread, with the request still there.
        on_loop = threading.current_thread() is threading.main_thread()
        seen.append(("sync", sender, username, request.args["username"], on_loop))

    async def async_receiver(sender: object, *, username: str) -> None:
        seen.append(("async", sender, username, request.args["username"], True))

    login_signal.connect(sync_receiver, sender=app)
    login_signal.connect(async_receiver, sender=app)
    try:
        async with app.test_app() as test_app:
            response = await test_app.test_client().get("/login/?username=ann")
            assert response.status_code == 200
    finally:
        login_signal.disconnect(sync_receiver)
        login_signal.disconnect(async_receiver)

    assert sorted(seen, key=lambda s: s[0]) == [
        ("async", app, "ann", "ann", True),
        ("sync", app, "ann", "ann", True),
    ]
    assert [r.username for r in read_records(log_path)] == ["ann"]


async def test_a_refused_login_sends_no_signal(app: Quart) -> None:
    seen: list[str] = []

    async def receiver(sender: object, *, username: str) -> None:
        seen.append(username)

    login_signal.connect(receiver, sender=app)
    try:
        async with app.test_app() as test_app:
            assert (await test_app.test_client().get("/login/?username=")).status_code == 400
    finally:
        login_signal.disconnect(receiver)
    assert seen == []


async def test_two_apps_each_log_only_their_own_logins(tmp_path: Path) -> None:
    path_a, path_b = tmp_path / "a.txt", tmp_path / "b.txt"
    app_a = create_app({"LOGIN_LOG_PATH": str(path_a)})
    app_b = create_app({"LOGIN_LOG_PATH": str(path_b)})
    async with app_a.test_app() as test_a, app_b.test_app() as test_b:
        client_a, client_b = test_a.test_client(), test_b.test_client()
        for i in range(3):
            await client_a.get(f"/login/?username=a{i}")
            await client_b.get(f"/login/?username=b{i}")
    assert [r.username for r in read_records(path_a)] == ["a0", "a1", "a2"]
    assert [r.username for r in read_records(path_b)] == ["b0", "b1", "b2"]


async def test_receiver_survives_garbage_collection(app: Quart, log_path: Path) -> None:
    # blinker's default weak reference would let the receiver, which nothing
    # else holds, be collected here, and logins would stop being logged.
    gc.collect()
    async with app.test_app() as test_app:
        gc.collect()
        response = await test_app.test_client().get("/login/?username=after-gc")
        assert response.status_code == 200
        assert [r.username for r in await wait_for_records(log_path, 1)] == ["after-gc"]


def test_a_collected_app_leaves_no_receiver_behind(tmp_path: Path) -> None:
    gc.collect()  # apps of earlier tests
    before = len(login_signal.receivers)
    app = create_app({"LOGIN_LOG_PATH": str(tmp_path / "gone.txt")})
    assert len(login_signal.receivers) == before + 1
    del app
    gc.collect()
    assert len(login_signal.receivers) == before


async def test_receivers_connected_or_gone_after_a_send_are_heard_or_not(app: Quart) -> None:
    # The signal keeps each sender's receivers between sends: any change must show.
    heard: list[str] = []

    async def first(sender: object, *, username: str) -> None:
        heard.append(f"first {username}")

    def second(sender: object, *, username: str) -> None:
        heard.append(f"second {username}")

    login_signal.connect(first, sender=app, weak=False)
    try:
        async with app.test_app() as test_app:
            client = test_app.test_client()
            await client.get("/login/?username=a")
            login_signal.connect(second, sender=app)  # weakly, as blinker does by default
            await client.get("/login/?username=b")
            second_ref = weakref.ref(second)
            del second
            gc.collect()
            assert second_ref() is None, "the kept receivers hold a weak receiver alive"
            await client.get("/login/?username=c")
            login_signal.disconnect(first)
            await client.get("/login/?username=d")
            login_signal.connect(first, sender=app, weak=False)
            with login_signal.muted():
                await client.get("/login/?username=e")
    finally:
        login_signal.disconnect(first)
    assert sorted(heard) == ["first a", "first b", "first c", "second b"]  # blinker: any order


def connect_readme_receiver(app: Quart, heard: list[str]) -> weakref.ref:
    """The README's example receiver, connected in a function: nothing keeps it but the signal."""

    @login_signal.connect_via(app)
    async def notify(sender: Quart, *, username: str) -> None:
        heard.append(f"{username} logged in to {sender.name}")

    return weakref.ref(notify)


async def test_the_readmes_receiver_hears_logins_after_its_function_returned(app: Quart) -> None:
    # The README says connect_via holds the receiver strongly: were it held
    # weakly, it would be collected here and hear nothing, without a word.
    heard: list[str] = []
    notify = connect_readme_receiver(app, heard)
    gc.collect()
    try:
        async with app.test_app() as test_app:
            response = await test_app.test_client().get("/login/?username=ann")
            assert response.status_code == 200
    finally:
        if (receiver := notify()) is not None:
            login_signal.disconnect(receiver)
    assert heard == [f"ann logged in to {app.name}"]


@pytest.mark.parametrize(
    ("error", "status"),
    [(PermissionError("banned"), 500), (Forbidden("banned"), 403)],
    ids=["exception", "http-exception"],
)
async def test_a_receiver_that_raises_gets_the_client_its_error_not_a_200(
    app: Quart, error: Exception, status: int
) -> None:
    # Whether the login is logged all the same depends on the order blinker
    # calls receivers in, which it does not set: the README says so.
    async def veto(sender: object, *, username: str) -> None:
        raise error

    login_signal.connect(veto, sender=app)
    try:
        async with app.test_app() as test_app:
            response = await test_app.test_client().get("/login/?username=vetoed")
    finally:
        login_signal.disconnect(veto)
    assert response.status_code == status
    assert "登录成功" not in await response.get_data(as_text=True)
