"""Configuration: defaults, QUART_* environment variables, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from quart_app import create_app
from quart_app.config import ConfigError

from conftest import FailingStore, read_records


def test_defaults_match_the_readme(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ["LOGIN_LOG_PATH", "LOGIN_LOG_FORMAT", "LOGIN_LOG_DURABLE"]:
        monkeypatch.delenv(f"QUART_{key}", raising=False)
    config = create_app().config
    assert config["LOGIN_LOG_PATH"] == "login_log.txt"
    assert config["LOGIN_LOG_FORMAT"] == "text"
    assert config["LOGIN_LOG_DURABLE"] is False
    assert config["LOGIN_LOG_MAX_PENDING"] == 10_000
    assert config["LOGIN_LOG_FULL_TIMEOUT"] == 5
    assert config["USERNAME_MAX_LENGTH"] == 256
    assert config["PROXY_TRUSTED_HOPS"] == 0
    assert config["MAX_CONTENT_LENGTH"] == 64 * 1024


async def test_environment_variables_configure_the_app(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log_path = tmp_path / "from-env.jsonl"
    monkeypatch.setenv("QUART_LOGIN_LOG_PATH", str(log_path))
    monkeypatch.setenv("QUART_LOGIN_LOG_FORMAT", "jsonl")
    monkeypatch.setenv("QUART_LOGIN_LOG_DURABLE", "true")
    monkeypatch.setenv("QUART_USERNAME_MAX_LENGTH", "5")
    app = create_app()
    assert app.config["LOGIN_LOG_DURABLE"] is True
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/login/?username=envok")).status_code == 200
        assert (await client.get("/login/?username=toolong")).status_code == 400
    assert log_path.read_text(encoding="utf-8").startswith('{"event": "login", "username": "envok"')


def test_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUART_LOGIN_LOG_FORMAT", "jsonl")
    assert create_app({"LOGIN_LOG_FORMAT": "text"}).config["LOGIN_LOG_FORMAT"] == "text"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"LOGIN_LOG_FORMAT": "xml"}, "LOGIN_LOG_FORMAT must be one of jsonl, text, not 'xml'"),
        ({"LOGIN_LOG_DURABLE": "maybe"}, "LOGIN_LOG_DURABLE must be true or false"),
        ({"LOGIN_LOG_MAX_PENDING": 0}, "LOGIN_LOG_MAX_PENDING must be at least 1"),
        ({"LOGIN_LOG_MAX_PENDING": "lots"}, "LOGIN_LOG_MAX_PENDING must be a number"),
        ({"LOGIN_LOG_FULL_TIMEOUT": -1}, "LOGIN_LOG_FULL_TIMEOUT must be at least 0"),
        ({"LOGIN_LOG_PATH": ""}, "LOGIN_LOG_PATH must be a file path"),
        ({"PROXY_TRUSTED_HOPS": -1}, "PROXY_TRUSTED_HOPS must be at least 0"),
        ({"PROXY_MODE": "magic"}, "PROXY_MODE must be one of legacy, modern"),
        ({"USERNAME_MAX_LENGTH": True}, "USERNAME_MAX_LENGTH must be a number"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(config, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        create_app(config)
    assert message in str(error.value)


async def test_health_is_ok_and_not_logged(client, log_path: Path) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    body = await response.get_json()
    assert body["status"] == "ok"
    assert body["pending"] == 0 and body["written"] == 0 and body["write_errors"] == 0
    assert read_records(log_path) == []


async def test_short_writes_are_finished_not_torn(make_app, log_path: Path) -> None:
    class ShortStore(FailingStore):
        async def append(self, data: memoryview) -> int:
            return await super().append(data[:7])  # the kernel may take less than asked

    app = make_app(store=lambda s: ShortStore(s.log_path))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for name in ["短写一", "short-two"]:
            assert (await client.get("/login/", query_string={"username": name})).status_code == 200
    assert [r.username for r in read_records(log_path)] == ["短写一", "short-two"]
