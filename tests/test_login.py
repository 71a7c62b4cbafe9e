"""The behaviour table: what each request answers and what it logs."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from quart import Quart

from quart_app.records import TEXT_PREFIX

from helpers.logs import read_records, wait_for_records
from helpers.stores import ControlledStore, store_of


async def test_index_says_hello_and_logs_nothing(client, log_path: Path) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert await response.get_data(as_text=True) == "Hello World!"
    assert read_records(log_path) == []


async def test_get_login_logs_the_original_line(app: Quart, log_path: Path) -> None:
    before = datetime.now(UTC)
    async with app.test_app() as test_app:
        response = await test_app.test_client().get(
            "/login/",
            query_string={"username": "张三"},
            scope_base={"client": ("203.0.113.7", 50000)},
        )
        assert response.status_code == 200
        assert await response.get_data(as_text=True) == "登录成功"
        [record] = await wait_for_records(log_path, 1)
    after = datetime.now(UTC)

    line = log_path.read_text(encoding="utf-8")
    assert line.startswith(f"{TEXT_PREFIX}张三,登录时间:")
    assert line.endswith(",ip地址:203.0.113.7\n")
    assert line.count("\n") == 1
    assert record.username == "张三"
    assert record.ip == "203.0.113.7"
    assert record.time.utcoffset() == timedelta(0)
    assert before <= record.time <= after


async def test_time_is_when_the_login_happened_not_when_written(make_app, log_path: Path) -> None:
    app = make_app(store=ControlledStore)
    store = store_of(app)
    store.gate.clear()
    async with app.test_app() as test_app:
        answered = datetime.now(UTC)
        await test_app.test_client().get("/login/?username=early")
        await asyncio.to_thread(store.entered.wait, 5)
        await asyncio.sleep(0.3)
        store.gate.set()
        [record] = await wait_for_records(log_path, 1)
    assert record.time - answered < timedelta(seconds=0.25)


@pytest.mark.parametrize(
    ("kwargs", "username"),
    [
        ({"form": {"username": "form-user"}}, "form-user"),
        ({"json": {"username": "json-user"}}, "json-user"),
        ({"query_string": {"username": "query-on-post"}}, "query-on-post"),
    ],
)
async def test_post_login(client, log_path: Path, kwargs, username: str) -> None:
    response = await client.post("/login/", **kwargs)
    assert response.status_code == 200
    assert await response.get_data(as_text=True) == "登录成功"
    [record] = await wait_for_records(log_path, 1)
    assert record.username == username


async def test_username_is_stripped(client, log_path: Path) -> None:
    response = await client.get("/login/", query_string={"username": "  li si \t"})
    assert response.status_code == 200
    [record] = await wait_for_records(log_path, 1)
    assert record.username == "li si"


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("GET", {}),
        ("GET", {"query_string": {"username": ""}}),
        ("GET", {"query_string": {"username": "   "}}),
        ("POST", {"form": {"username": " "}}),
        ("POST", {"form": {"other": "x"}}),
        ("POST", {"json": {"username": ""}}),
        ("POST", {"json": {}}),
    ],
)
async def test_missing_username_is_400_and_logs_nothing(
    app: Quart, log_path: Path, method: str, kwargs
) -> None:
    async with app.test_app() as test_app:
        response = await test_app.test_client().open("/login/", method=method, **kwargs)
        assert response.status_code == 400
        assert await response.get_data(as_text=True) == "请输入用户名"
    # The writer has drained on shutdown: anything queued would be on disk now.
    assert read_records(log_path) == []


async def test_jsonl_format(make_app, log_path: Path) -> None:
    app = make_app(LOGIN_LOG_FORMAT="jsonl")
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for name in ["张三", 'quote"back\\slash']:
            assert (await client.get("/login/", query_string={"username": name})).status_code == 200
    lines = log_path.read_text(encoding="utf-8").splitlines()
    objects = [json.loads(line) for line in lines]
    assert [o["username"] for o in objects] == ["张三", 'quote"back\\slash']
    for o in objects:
        assert set(o) == {"event", "username", "time", "ip"}
        assert o["event"] == "login"
        assert o["ip"] == "-"  # the test client has no address ("<local>")
        assert datetime.fromisoformat(o["time"]).utcoffset() == timedelta(0)
    assert '"username": "张三"' in lines[0]


async def test_every_accepted_login_is_written_once_in_order(client, log_path: Path) -> None:
    names = [f"user-{i}" for i in range(200)]
    for name in names:
        assert (await client.get("/login/", query_string={"username": name})).status_code == 200
    records = await wait_for_records(log_path, len(names))
    assert [r.username for r in records] == names
