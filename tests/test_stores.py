"""Choosing the store: the registry, its wrappers, and a store that wraps another."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from quart_app.config import Settings
from quart_app.records import LoginRecord, text_lines
from quart_app.stores import RecordStore, StoreRegistry, WrappingStore, store_from_settings
from quart_app.stores.file import FileStore

URL = "postgresql://auditor:Sekr3t@db.example:6432/audit"


def settings(**config: Any) -> Settings:
    return Settings.from_config(config)


def test_the_file_is_the_store_unless_a_database_url_is_set(tmp_path: Path) -> None:
    file = store_from_settings(settings(LOGIN_LOG_PATH=str(tmp_path / "log.txt")))
    assert isinstance(file, FileStore) and file.path == str(tmp_path / "log.txt")
    table = store_from_settings(settings(LOGIN_LOG_DATABASE_URL=URL, LOGIN_LOG_TABLE="audit.log"))
    assert table.kind == "postgresql"
    assert table.description == "PostgreSQL table audit.log at auditor@db.example:6432/audit"


def test_asyncpg_is_imported_only_for_the_postgresql_store() -> None:
    # A fresh interpreter: this one's tests import asyncpg.
    code = (
        "import sys\n"
        "from quart_app.config import Settings\n"
        "from quart_app.stores import store_from_settings\n"
        "store_from_settings(Settings())\n"
        "assert 'asyncpg' not in sys.modules, 'asyncpg imported for the file store'\n"
        f"store_from_settings(Settings.from_config({{'LOGIN_LOG_DATABASE_URL': {URL!r}}}))\n"
        "assert 'asyncpg' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


class Tagged(WrappingStore):
    """Overrides only ``kind``, and says which wrappers it is inside of."""

    def __init__(self, inner: RecordStore, tag: str) -> None:
        super().__init__(inner)
        self.tag = tag

    @property
    def kind(self) -> str:
        return f"{self.tag}({self.inner.kind})"


def test_wrappers_turned_on_go_around_the_store_in_the_order_registered(tmp_path: Path) -> None:
    registry = StoreRegistry()
    registry.register_store("file", "quart_app.stores.file:from_settings")
    registry.register_wrapper("inner", lambda store, _: Tagged(store, "inner"), when=lambda _: True)
    # Turned off, it is never imported: the module does not even exist.
    registry.register_wrapper("off", "quart_app.no_such_module:wrap", when=lambda _: False)
    registry.register_wrapper(
        "durable only",
        lambda store, _: Tagged(store, "outer"),
        when=lambda settings: settings.login_log_durable,
    )
    path = str(tmp_path / "log.txt")
    assert registry.store_for(settings(LOGIN_LOG_PATH=path)).kind == "inner(file)"
    durable = registry.store_for(settings(LOGIN_LOG_PATH=path, LOGIN_LOG_DURABLE=True))
    assert durable.kind == "outer(inner(file))"
    assert durable.description == f"file {path!r}"


def test_a_name_is_registered_once_and_an_unknown_one_is_named() -> None:
    registry = StoreRegistry()
    registry.register_store("file", "quart_app.stores.file:from_settings")
    with pytest.raises(ValueError, match="a store named 'file' is registered already"):
        registry.register_store("file", "quart_app.stores.file:from_settings")
    registry.register_wrapper("spool", "quart_app.no_such_module:wrap", when=lambda _: False)
    with pytest.raises(ValueError, match="a wrapper named 'spool' is registered already"):
        registry.register_wrapper("spool", "quart_app.no_such_module:wrap", when=lambda _: False)
    with pytest.raises(ValueError, match=r"no store is named 'postgresql' \(registered: file\)"):
        registry.store_for(settings(LOGIN_LOG_DATABASE_URL=URL))


async def test_a_wrapping_store_hands_every_call_to_the_store_it_wraps(tmp_path: Path) -> None:
    calls: list[str] = []

    class Counting(WrappingStore):
        async def write(self, batch: Any) -> Sequence[LoginRecord]:
            calls.append("write")
            return await super().write(batch)

    path = tmp_path / "log.txt"
    store = Counting(FileStore(str(path), durable=True))
    assert (store.kind, store.description) == ("file", f"file {str(path)!r}")
    records = [LoginRecord(f"w{i}", datetime.now(UTC), "192.0.2.1") for i in range(3)]
    await store.open()
    assert await store.write(store.prepare(records)) == ()
    await store.sync()
    await store.close()
    assert calls == ["write"]
    assert path.read_bytes() == text_lines(records)
