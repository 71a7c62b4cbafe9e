"""The settings: one table that gives each key its default, its check and its meaning.

Every key may be set in the Quart config, or in the environment with the
``QUART_`` prefix (``QUART_LOGIN_LOG_DURABLE=true``). The environment's values
of these keys are taken as the strings they are, not parsed as JSON as Quart
does for its own keys (``QUART_LOGIN_LOG_FILE_MODE=640`` means 0640, not 640).
Every value is checked when the app is built; a bad one raises
:class:`ConfigError` naming the key, so nothing breaks later while serving.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .records import FORMATTERS

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


MAX_PENDING_LIMIT = 100_000
"""The most ``LOGIN_LOG_MAX_PENDING`` takes: a stop whose drain gave up logs that many records
in about 0.2 s, well within the 2 s it keeps for that (``serving.DRAIN_MARGIN``;
``python -m bench.stop`` measures it)."""

DURABLE_MIN_WAIT = 0.1
"""Seconds: the least ``LOGIN_LOG_FULL_TIMEOUT`` durable mode takes (syncs take milliseconds)."""


SPOOL_MIN_BYTES = 4096
"""The least ``LOGIN_LOG_SPOOL_MAX_BYTES`` takes: room for the longest record, and then some."""


QUART_KEYS = frozenset({"MAX_CONTENT_LENGTH"})
"""Keys of the table that are Quart's own: the project's app checks them, the extension not."""


class ConfigError(ValueError):
    """A configuration value is not usable."""


Check = Callable[[str, Any], Any]


def boolean(key: str, value: Any) -> bool:
    """``true``/``false`` and the usual spellings of them."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{key} must be true or false, not {value!r}")


def integer(low: int, high: int) -> Check:
    """A whole number in ``[low, high]``; ``1.9`` is refused, not rounded."""

    def check(key: str, value: Any) -> int:
        number: Any = value
        if isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                try:  # "1e3"
                    number = float(value)
                except ValueError:
                    raise ConfigError(f"{key} must be a whole number, not {value!r}") from None
        if isinstance(number, float) and math.isfinite(number) and number.is_integer():
            number = int(number)
        if isinstance(number, bool) or not isinstance(number, int):
            raise ConfigError(f"{key} must be a whole number, not {value!r}")
        if not low <= number <= high:
            raise ConfigError(f"{key} must be between {low} and {high}, not {value!r}")
        return number

    return check


def seconds(low: float, high: float, *, low_open: bool = False) -> Check:
    """A finite number of seconds in ``[low, high]`` (``(low, high]`` with ``low_open``)."""

    def check(key: str, value: Any) -> float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{key} must be a number of seconds, not {value!r}") from None
        too_low = number <= low if low_open else number < low
        if not math.isfinite(number) or too_low or number > high:
            bound = "more than" if low_open else "at least"
            raise ConfigError(f"{key} must be {bound} {low:g} and at most {high:g}, not {value!r}")
        return number

    return check


def fraction(key: str, value: Any) -> float:
    """A share in ``(0, 1]``."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key} must be a number between 0 and 1, not {value!r}") from None
    if not (math.isfinite(number) and 0 < number <= 1):
        raise ConfigError(f"{key} must be more than 0 and at most 1, not {value!r}")
    return number


def choice(*choices: str) -> Check:
    """One of ``choices``."""

    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    return check


def path(key: str, value: Any) -> str:
    """A non-empty file path (a ``str`` or path object) without a NUL."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ConfigError(f"{key} must be a file path, not {value!r}")
    return value


def optional_path(key: str, value: Any) -> str:
    """A file path, or empty (off)."""
    if value is None or value == "":
        return ""
    return path(key, value)


def file_mode(key: str, value: Any) -> int:
    """Permission bits: an int (``0o640``) or an octal string (``"0640"``)."""
    mode: Any = value
    if isinstance(value, str):
        try:
            mode = int(value.strip(), 8)
        except ValueError:
            raise ConfigError(f"{key} must be octal permissions like 0640, not {value!r}") from None
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise ConfigError(f"{key} must be permissions between 0000 and 0777, not {value!r}")
    if mode & 0o600 != 0o600:
        # Read too: the store reads the last byte, to end a torn line.
        raise ConfigError(f"{key} must let the owner read and write the log, not {value!r}")
    return mode


class DatabaseURL(str):
    """A checked ``LOGIN_LOG_DATABASE_URL``: empty (no database), or a ``postgresql://`` URL
    with one host that reads one way only.

    It is the URL's text (a ``str``: the setting keeps its value, and asyncpg
    connects with it), read once into what it names: :attr:`where` is
    ``user@host:port/database`` without the password, for messages, and
    :attr:`query_names` the parameters its query sets. Its ``repr`` shows
    :attr:`where` only. Immutable, like the settings that hold it.

    Python's ``urlsplit`` (which names the database in messages) ends the user
    name and password at the last '@', asyncpg (which connects) at the first,
    and ``urlsplit`` takes a '[' anywhere before the host for an IPv6 address:
    a URL whose user name or password holds an unencoded '@', '[' or ']' would
    be read two ways, and asyncpg's error would quote the password. Those are
    refused with :class:`ConfigError`, as is anything else the two would read
    differently (several hosts, a query asyncpg cannot parse). Its messages
    start with ``key`` and never quote the value: it may hold a password.
    """

    where: str
    query_names: frozenset[str]

    def __new__(cls, value: object = "", *, key: str = "the database URL") -> DatabaseURL:
        if value is None or value == "":
            return cls._made("", "", frozenset())
        example = "postgresql://user:password@host:port/database"
        if not isinstance(value, str) or not value.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"{key} must be a URL like {example}")
        # The authority ends at the first / ? or #, for urlsplit and asyncpg alike.
        authority = re.split(r"[/?#]", value.partition("://")[2], maxsplit=1)[0]
        userinfo = authority.rpartition("@")[0]
        if any(character in userinfo for character in "@[]"):
            raise ConfigError(
                f"{key} has an '@', '[' or ']' in its user name or password: percent-encode "
                "them (%40 for @, %5B for [, %5D for ])"
            )
        one_host = f"{key} must name one host, with a numeric port if any, like {example}"
        try:
            parts = urlsplit(value)
        except ValueError:  # a bracket in the host; the message may quote the URL
            raise ConfigError(one_host) from None
        if "@" in parts.path + parts.query + parts.fragment:
            # A password holding / ? # cut the URL short before its "@".
            raise ConfigError(
                f"{key} has an '@' after its host: percent-encode the user name and password "
                "(%40 for @, %2F for /, %3F for ?, %23 for #)"
            )
        try:
            port = parts.port
        except ValueError:  # not a number
            raise ConfigError(one_host) from None
        if "," in (parts.hostname or ""):  # asyncpg would take a list of hosts
            raise ConfigError(one_host)
        try:
            query = parse_qs(parts.query, strict_parsing=True)  # as asyncpg parses it
        except ValueError:
            raise ConfigError(
                f"{key} has a query that is not name=value pairs joined by &"
            ) from None
        # Unquoted, as asyncpg reads it: %2Ftmp is the socket directory /tmp.
        # As asyncpg reads them: the URL, then its query, then the PG* environment.
        environ = os.environ
        host = (
            unquote(parts.hostname or "")
            or query.get("host", [environ.get("PGHOST", "(default host)")])[0]
        )
        if ":" in host:
            host = f"[{host}]"
        port = port or query.get("port", [environ.get("PGPORT", "5432")])[0]
        user = (
            unquote(parts.username or "")
            or query.get("user", [environ.get("PGUSER", "(default user)")])[0]
        )
        database = (
            unquote(parts.path.lstrip("/"))
            or query.get("dbname", query.get("database", [environ.get("PGDATABASE", user)]))[0]
        )
        return cls._made(value, f"{user}@{host}:{port}/{database}", frozenset(query))

    @classmethod
    def _made(cls, text: str, where: str, query_names: frozenset[str]) -> DatabaseURL:
        url = super().__new__(cls, text)
        object.__setattr__(url, "where", where)
        object.__setattr__(url, "query_names", query_names)
        return url

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return f"<DatabaseURL {self.where or '(empty)'}>"


def database_url(key: str, value: Any) -> DatabaseURL:
    """Empty (no database), or a ``postgresql://`` URL: see :class:`DatabaseURL`."""
    return value if isinstance(value, DatabaseURL) else DatabaseURL(value, key=key)


TABLE_NAME = re.compile(r"(?:[a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,47}")


def table_name(key: str, value: Any) -> str:
    """A lower-case SQL name, optionally schema-qualified: ``login_log``, ``audit.login_log``.

    At most 48 characters for the table (PostgreSQL allows 63), which leaves room for the names
    PostgreSQL gives its indexes.
    """
    if not isinstance(value, str) or not TABLE_NAME.fullmatch(value):
        raise ConfigError(
            f"{key} must be a lower-case table name like login_log or audit.login_log "
            f"(letters, digits, _; at most 48 characters), not {value!r}"
        )
    return value


def label(key: str, value: Any) -> str:
    """Printable text of at most 255 characters, or empty."""
    if not isinstance(value, str) or len(value) > 255 or not value.isprintable():
        raise ConfigError(f"{key} must be printable text of at most 255 characters, not {value!r}")
    return value.strip()


def _setting(default: Any, check: Check, meaning: str) -> Any:
    return field(default=default, metadata={"check": check, "meaning": meaning})


@dataclass(frozen=True, slots=True)
class Settings:
    """The checked, typed settings. Each field is the lower-case form of its config key."""

    login_log_path: str = _setting(
        "login_log.txt",
        path,
        "the file lines are appended to; checked at start",
    )
    login_log_format: str = _setting(
        "text", choice(*FORMATTERS), "`text` (the original's line) or `jsonl` (JSON Lines)"
    )
    login_log_durable: bool = _setting(
        False, boolean, "answer 200 only once the record is on disk (fsync) or committed"
    )
    login_log_file_mode: int = _setting(
        0o640, file_mode, "mode of a log file the app creates (octal, owner read-write)"
    )
    login_log_seal_key: str = _setting(
        "",
        optional_path,
        "signing key (`quart-app-log keygen`): seals the log or the table; empty: not sealed",
    )
    login_log_seal_interval: float = _setting(
        1.0,
        seconds(0, 3600, low_open=True),
        "seconds between checkpoints of a sealed log while lines arrive",
    )
    login_log_seal_epoch: float = _setting(
        900.0,
        seconds(0, 900, low_open=True),
        "seconds a sealing key is used before the next replaces it; at most 900",
    )
    login_log_database_url: DatabaseURL = _setting(  # noqa: RUF009 -- DatabaseURL is immutable
        DatabaseURL(),
        database_url,
        "a `postgresql://` URL: records go to a table, not the file",
    )
    login_log_table: str = _setting(
        "login_log", table_name, "the table, created if missing (`schema.table` works too)"
    )
    login_log_host: str = _setting(
        "", label, "the `host` column of each row; empty: this machine's host name"
    )
    login_log_database_timeout: float = _setting(
        5.0,
        seconds(0, 3600, low_open=True),
        "seconds each connect and statement may take before it fails",
    )
    login_log_spool_dir: str = _setting(
        "",
        optional_path,
        "a local directory where records wait while the database is away; empty: no spool",
    )
    login_log_spool_max_bytes: int = _setting(
        1 << 30,
        integer(SPOOL_MIN_BYTES, 1 << 50),
        "bytes the spool directory may hold, all workers together; then 503",
    )
    login_log_max_pending: int = _setting(
        10_000,
        integer(1, MAX_PENDING_LIMIT),
        f"records that may wait to be written; at most {MAX_PENDING_LIMIT}",
    )
    login_log_full_timeout: float = _setting(
        5.0,
        seconds(0, 3600),
        "seconds a login may wait for room or for its record, then 503",
    )
    login_log_drain_timeout: float = _setting(
        15.0,
        seconds(0, 3600, low_open=True),
        "seconds a stop waits for the writer before giving up (exit 3)",
    )
    login_log_stall_seconds: float = _setting(
        5.0,
        seconds(0, 3600, low_open=True),
        "`/readyz` fails while a record has waited longer than this",
    )
    login_log_high_water: float = _setting(
        0.8, fraction, "`/readyz` fails while more than this share of the queue is full"
    )
    # At most 320: a line then always fits PIPE_BUF (4,096 bytes), what a pipe
    # writes whole, even with every character escaped.
    username_max_length: int = _setting(
        256, integer(1, 320), "longer usernames get 400; at most 320"
    )
    proxy_trusted_hops: int = _setting(
        0,
        integer(0, 16),
        "proxies whose forwarding header gives the IP; 0: the socket peer",
    )
    proxy_mode: str = _setting(
        "legacy",
        choice("legacy", "modern"),
        "`legacy`: `X-Forwarded-For`; `modern`: `Forwarded` (RFC 7239)",
    )
    max_content_length: int = _setting(
        64 * 1024, integer(1, 1 << 30), "larger request bodies get 413 (Quart's own key)"
    )

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, quart_keys: bool = True) -> Settings:
        """Check every key of :func:`table` found in ``config``; raise :class:`ConfigError`.

        ``quart_keys=False`` leaves Quart's own keys (``MAX_CONTENT_LENGTH``) to
        the app: an extension in someone's app checks only its own.
        """
        values = {}
        for item in fields(cls):
            key = item.name.upper()
            if not quart_keys and key in QUART_KEYS:
                values[item.name] = item.default
                continue
            values[item.name] = item.metadata["check"](key, config.get(key, item.default))
        settings = cls(**values)
        if settings.login_log_durable and settings.login_log_full_timeout < DURABLE_MIN_WAIT:
            raise ConfigError(
                f"LOGIN_LOG_FULL_TIMEOUT must be at least {DURABLE_MIN_WAIT:g} s when "
                "LOGIN_LOG_DURABLE is on: a login waits that long for its sync, and would "
                "be answered 503 while logged"
            )
        if settings.login_log_spool_dir and not settings.login_log_database_url:
            raise ConfigError(
                "LOGIN_LOG_SPOOL_DIR keeps records the database cannot take now: it needs "
                "LOGIN_LOG_DATABASE_URL"
            )
        return settings


@dataclass(frozen=True, slots=True)
class Key:
    """One row of the settings table."""

    name: str
    default: Any
    meaning: str


def table() -> list[Key]:
    """Every setting, in order: the README's configuration table is this list."""
    return [
        Key(item.name.upper(), item.default, item.metadata["meaning"]) for item in fields(Settings)
    ]


def defaults() -> dict[str, Any]:
    """Every key with its default value."""
    return {key.name: key.default for key in table()}


def from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The keys set in ``environ`` as ``QUART_KEY``, as the strings they are."""
    return {
        key.name: environ[f"QUART_{key.name}"] for key in table() if f"QUART_{key.name}" in environ
    }
