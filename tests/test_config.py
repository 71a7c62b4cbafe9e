"""Configuration: defaults, QUART_* environment variables, and clear errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from quart_app import create_app
from quart_app.config import ConfigError, DatabaseURL, Key, Settings, table
from quart_app.state import KEY

from helpers.logs import read_records

README = Path(__file__).resolve().parent.parent / "README.md"


def shown(key: Key) -> str:
    """A default as the README writes it."""
    if key.name == "LOGIN_LOG_FILE_MODE":
        return f"0{key.default:o}"
    if key.default == "":
        return "(empty)"
    if isinstance(key.default, bool):
        return str(key.default).lower()
    if isinstance(key.default, float):
        return f"{key.default:g}"
    return str(key.default)


def readme_table() -> dict[str, tuple[str, str]]:
    """The README's configuration table: key -> (default, meaning)."""
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[A-Z_]+`", cells[0]):
            rows[cells[0].strip("`")] = (cells[1].strip("`"), cells[2])
    return rows


def test_the_readme_table_is_the_settings_table() -> None:
    documented = readme_table()
    assert list(documented) == [key.name for key in table()]
    for key in table():
        assert documented[key.name] == (shown(key), key.meaning), key.name


def test_defaults_apply_without_configuration() -> None:
    settings = Settings.from_config(create_app().config)
    assert settings == Settings()
    assert create_app().config["MAX_CONTENT_LENGTH"] == 64 * 1024


async def test_environment_variables_configure_the_app(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log_path = tmp_path / "from-env.jsonl"
    monkeypatch.setenv("QUART_LOGIN_LOG_PATH", str(log_path))
    monkeypatch.setenv("QUART_LOGIN_LOG_FORMAT", "jsonl")
    monkeypatch.setenv("QUART_LOGIN_LOG_DURABLE", "true")
    monkeypatch.setenv("QUART_USERNAME_MAX_LENGTH", "5")
    app = create_app()
    assert app.extensions[KEY].settings.login_log_durable is True
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
        ({"LOGIN_LOG_FORMAT": "xml"}, "LOGIN_LOG_FORMAT must be one of text, jsonl, not 'xml'"),
        ({"LOGIN_LOG_DURABLE": "maybe"}, "LOGIN_LOG_DURABLE must be true or false"),
        ({"LOGIN_LOG_MAX_PENDING": 0}, "LOGIN_LOG_MAX_PENDING must be between 1 and"),
        # More than a stop can log within its margin (DRAIN_MARGIN) once the drain gave up.
        ({"LOGIN_LOG_MAX_PENDING": 100_001}, "LOGIN_LOG_MAX_PENDING must be between 1 and 100000"),
        ({"LOGIN_LOG_MAX_PENDING": "lots"}, "LOGIN_LOG_MAX_PENDING must be a whole number"),
        ({"LOGIN_LOG_MAX_PENDING": 1.9}, "LOGIN_LOG_MAX_PENDING must be a whole number"),
        ({"LOGIN_LOG_MAX_PENDING": 1e400}, "LOGIN_LOG_MAX_PENDING must be a whole number"),
        ({"LOGIN_LOG_FULL_TIMEOUT": -1}, "LOGIN_LOG_FULL_TIMEOUT must be at least 0"),
        ({"LOGIN_LOG_FULL_TIMEOUT": float("nan")}, "LOGIN_LOG_FULL_TIMEOUT must be at least 0"),
        ({"LOGIN_LOG_FULL_TIMEOUT": float("inf")}, "LOGIN_LOG_FULL_TIMEOUT must be at least 0"),
        ({"LOGIN_LOG_FULL_TIMEOUT": "soon"}, "LOGIN_LOG_FULL_TIMEOUT must be a number of seconds"),
        ({"LOGIN_LOG_DRAIN_TIMEOUT": 0}, "LOGIN_LOG_DRAIN_TIMEOUT must be more than 0"),
        ({"LOGIN_LOG_STALL_SECONDS": "1e400"}, "LOGIN_LOG_STALL_SECONDS must be more than 0"),
        ({"LOGIN_LOG_HIGH_WATER": 1.5}, "LOGIN_LOG_HIGH_WATER must be more than 0 and at most 1"),
        ({"LOGIN_LOG_PATH": ""}, "LOGIN_LOG_PATH must be a file path"),
        ({"PROXY_TRUSTED_HOPS": -1}, "PROXY_TRUSTED_HOPS must be between 0 and 16"),
        ({"PROXY_MODE": "magic"}, "PROXY_MODE must be one of legacy, modern"),
        ({"USERNAME_MAX_LENGTH": True}, "USERNAME_MAX_LENGTH must be a whole number"),
        ({"MAX_CONTENT_LENGTH": "abc"}, "MAX_CONTENT_LENGTH must be a whole number"),
        ({"MAX_CONTENT_LENGTH": None}, "MAX_CONTENT_LENGTH must be a whole number"),
        ({"LOGIN_LOG_TABLE": "Login-Log"}, "LOGIN_LOG_TABLE must be a lower-case table name"),
        ({"LOGIN_LOG_TABLE": "a.b.c"}, "LOGIN_LOG_TABLE must be a lower-case table name"),
        ({"LOGIN_LOG_TABLE": "x" * 49}, "LOGIN_LOG_TABLE must be a lower-case table name"),
        ({"LOGIN_LOG_HOST": "web\n1"}, "LOGIN_LOG_HOST must be printable text"),
        ({"LOGIN_LOG_DATABASE_TIMEOUT": 0}, "LOGIN_LOG_DATABASE_TIMEOUT must be more than 0"),
        (
            {"LOGIN_LOG_DURABLE": True, "LOGIN_LOG_FULL_TIMEOUT": 0},
            "LOGIN_LOG_FULL_TIMEOUT must be at least 0.1 s when LOGIN_LOG_DURABLE is on",
        ),
        (
            {"LOGIN_LOG_DURABLE": True, "LOGIN_LOG_FULL_TIMEOUT": 0.0001},
            "LOGIN_LOG_FULL_TIMEOUT must be at least 0.1 s when LOGIN_LOG_DURABLE is on",
        ),
        ({"LOGIN_LOG_FILE_MODE": 0o200}, "LOGIN_LOG_FILE_MODE must let the owner read and write"),
        ({"USERNAME_MAX_LENGTH": 321}, "USERNAME_MAX_LENGTH must be between 1 and 320"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(config, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        create_app(config)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://app:Secret-1@db/audit", "must be a URL like postgresql://"),
        ("app:Secret-1@db/audit", "must be a URL like postgresql://"),
        # Characters of the password not percent-encoded: the URL ends early.
        ("postgresql://app:Secret/1@db/audit", "has an '@' after its host"),
        ("postgresql://app:Secret#1@db/audit", "has an '@' after its host"),
        ("postgresql://app:Secret?1@db/audit", "has an '@' after its host"),
        ("postgresql://app:Secret-1@db:port/audit", "must name one host, with a numeric port"),
        ("postgresql://app:Secret-1@db1:5432,db2:5432/audit", "must name one host"),
    ],
)
def test_bad_database_urls_are_refused_without_quoting_them(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        create_app({"LOGIN_LOG_DATABASE_URL": url})
    assert message in str(error.value)
    assert "Secret" not in str(error.value)


def test_database_settings_are_taken() -> None:
    url = "postgresql://app:p%40ss@db.example:6432/audit?sslmode=verify-full"
    settings = Settings.from_config(
        {
            "LOGIN_LOG_DATABASE_URL": url,
            "LOGIN_LOG_TABLE": "audit.login_log",
            "LOGIN_LOG_HOST": " web-1 ",
            "LOGIN_LOG_DATABASE_TIMEOUT": "2.5",
        }
    )
    assert settings.login_log_database_url == url
    assert settings.login_log_table == "audit.login_log"
    assert settings.login_log_host == "web-1"
    assert settings.login_log_database_timeout == 2.5


def test_the_database_url_is_read_once_into_what_it_names() -> None:
    url = "postgresql://app:p%40ss@db.example:6432/audit?sslmode=require&application_name=web"
    settings = Settings.from_config({"LOGIN_LOG_DATABASE_URL": url})
    checked = settings.login_log_database_url
    assert isinstance(checked, DatabaseURL) and checked == url
    assert checked.where == "app@db.example:6432/audit"
    assert checked.query_names == {"sslmode", "application_name"}
    assert "p%40ss" not in repr(settings) and "app@db.example:6432/audit" in repr(settings)
    with pytest.raises(AttributeError):
        checked.where = "elsewhere"
    socket = DatabaseURL("postgresql:///audit?host=%2Fvar%2Frun&user=app")
    assert socket.where == "app@/var/run:5432/audit"
    # The port and host may be given in the query too: asyncpg connects there.
    queried = DatabaseURL("postgresql://app@/audit?host=db.example&port=6543")
    assert queried.where == "app@db.example:6543/audit"
    assert DatabaseURL("postgresql://app@db.example/audit?port=6543").where == (
        "app@db.example:6543/audit"
    )
    assert DatabaseURL("postgresql://app@db.example?database=audit2").where == (
        "app@db.example:5432/audit2"
    )
    empty = Settings.from_config({"LOGIN_LOG_DATABASE_URL": ""}).login_log_database_url
    assert isinstance(empty, DatabaseURL) and not empty


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("QUART_LOGIN_LOG_FULL_TIMEOUT", "NaN", "LOGIN_LOG_FULL_TIMEOUT"),
        ("QUART_LOGIN_LOG_FULL_TIMEOUT", "Infinity", "LOGIN_LOG_FULL_TIMEOUT"),
        ("QUART_MAX_CONTENT_LENGTH", "abc", "MAX_CONTENT_LENGTH"),
        ("QUART_MAX_CONTENT_LENGTH", "1e400", "MAX_CONTENT_LENGTH"),
        ("QUART_LOGIN_LOG_MAX_PENDING", "1.9", "LOGIN_LOG_MAX_PENDING"),
        ("QUART_LOGIN_LOG_FILE_MODE", "0999", "LOGIN_LOG_FILE_MODE"),
        # Quart would parse 444 as a decimal number: 0o674, group-writable.
        ("QUART_LOGIN_LOG_FILE_MODE", "444", "LOGIN_LOG_FILE_MODE must let the owner read"),
    ],
)
def test_bad_environment_values_stop_the_app_at_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=key):
        create_app()


def test_good_environment_spellings_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUART_LOGIN_LOG_MAX_PENDING", "500")
    monkeypatch.setenv("QUART_LOGIN_LOG_FULL_TIMEOUT", "2.5")
    monkeypatch.setenv("QUART_LOGIN_LOG_FILE_MODE", "640")
    monkeypatch.setenv("QUART_MAX_CONTENT_LENGTH", "1e3")
    settings = Settings.from_config(create_app().config)
    assert settings.login_log_max_pending == 500
    assert settings.login_log_full_timeout == 2.5
    assert settings.login_log_file_mode == 0o640
    assert settings.max_content_length == 1000


def test_importing_the_package_builds_nothing_and_patches_nothing() -> None:
    # A bad setting in the environment must not stop `import quart_app` (the
    # load-test tool imports it), and h11 stays as it is for other users.
    code = (
        "import h11._readers as r; before = r.request_line_re; "
        "import quart_app, quart_app.tools.loadtest, sys; "
        "assert r.request_line_re is before; "
        "assert 'quart_app.app' not in sys.modules and 'prometheus_client' not in sys.modules"
    )
    env = {**os.environ, "QUART_LOGIN_LOG_FORMAT": "xml"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


async def test_short_writes_are_finished_not_torn(
    make_app, log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def short_write(fd: int, data: bytes) -> int:
        return real_write(fd, data[:7])  # the kernel may take less than asked

    monkeypatch.setattr(os, "write", short_write)
    app = make_app()
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for name in ["短写一", "short-two"]:
            assert (await client.get("/login/", query_string={"username": name})).status_code == 200
    assert [r.username for r in read_records(log_path)] == ["短写一", "short-two"]


def test_the_database_url_names_what_the_pg_environment_fills_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {"PGHOST": "db.example", "PGPORT": "6543", "PGUSER": "app"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PGDATABASE", "audit")
    assert DatabaseURL("postgresql://").where == "app@db.example:6543/audit"
    assert DatabaseURL("postgresql://web@db2/other").where == "web@db2:6543/other"
