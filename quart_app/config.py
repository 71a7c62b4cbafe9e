"""Configuration: defaults, and checking the values an operator gave.

Every key may be set in the Quart config, or in the environment with the
``QUART_`` prefix (``QUART_LOGIN_LOG_DURABLE=true``), which Quart parses as JSON
where it can.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .records import FORMATTERS

DEFAULTS: dict[str, Any] = {
    "LOGIN_LOG_PATH": "login_log.txt",
    "LOGIN_LOG_FORMAT": "text",
    "LOGIN_LOG_DURABLE": False,
    "LOGIN_LOG_MAX_PENDING": 10_000,
    "LOGIN_LOG_FULL_TIMEOUT": 5.0,
    "USERNAME_MAX_LENGTH": 256,
    "PROXY_TRUSTED_HOPS": 0,
    "PROXY_MODE": "legacy",
    "MAX_CONTENT_LENGTH": 64 * 1024,
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration value is not usable."""


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{key} must be true or false, not {value!r}")


def _number(key: str, value: Any, kind: type[int] | type[float], minimum: float) -> Any:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, not {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, not {value!r}")
    return number


def _choice(key: str, value: Any, choices: Any) -> str:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(sorted(choices))}, not {value!r}")
    return str(value)


@dataclass(frozen=True, slots=True)
class Settings:
    """The checked, typed settings the app is built from."""

    log_path: str
    log_format: str
    durable: bool
    max_pending: int
    full_timeout: float
    username_max_length: int
    proxy_trusted_hops: int
    proxy_mode: str


def load_settings(config: Mapping[str, Any]) -> Settings:
    """Check the app's config and return it typed; raise :class:`ConfigError` if wrong."""
    path = config["LOGIN_LOG_PATH"]
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ConfigError(f"LOGIN_LOG_PATH must be a file path, not {path!r}")
    return Settings(
        log_path=path,
        log_format=_choice("LOGIN_LOG_FORMAT", config["LOGIN_LOG_FORMAT"], FORMATTERS),
        durable=_bool("LOGIN_LOG_DURABLE", config["LOGIN_LOG_DURABLE"]),
        max_pending=_number("LOGIN_LOG_MAX_PENDING", config["LOGIN_LOG_MAX_PENDING"], int, 1),
        full_timeout=_number("LOGIN_LOG_FULL_TIMEOUT", config["LOGIN_LOG_FULL_TIMEOUT"], float, 0),
        username_max_length=_number("USERNAME_MAX_LENGTH", config["USERNAME_MAX_LENGTH"], int, 1),
        proxy_trusted_hops=_number("PROXY_TRUSTED_HOPS", config["PROXY_TRUSTED_HOPS"], int, 0),
        proxy_mode=_choice("PROXY_MODE", config["PROXY_MODE"], {"legacy", "modern"}),
    )
