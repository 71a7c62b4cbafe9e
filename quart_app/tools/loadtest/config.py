"""What a run sends: :class:`LoadConfig`, checked when it is made."""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from yarl import URL

LOGIN_PATH = "/login/"
# RFC 3986's unreserved characters: sent as they are, and neither stripped nor
# escaped by the server, so the log holds exactly the username that was sent.
_USERNAME_PART = re.compile(r"[A-Za-z0-9._~-]*")

# Bounds that keep every figure finite where it becomes an integer (nanoseconds,
# uvloop's timer milliseconds) and a run's memory in reason.
MAX_DURATION_S = 7 * 24 * 3600
"""A week: longer runs are no load test."""
MIN_RATE = 0.001
MAX_RATE = 1_000_000
"""Requests due per second: a period of at most 1,000 s, and far above what one client sends."""
MAX_CONCURRENCY = 100_000
"""Workers and connections: each is a task, well past the sockets one process gets."""
MAX_TIMEOUT_S = 3600
"""An hour: the latency histograms' highest value."""

Method = Literal["get", "post"]
Arrivals = Literal["constant", "poisson"]


def _check_url(url: str) -> None:
    # Anything else reaches aiohttp, fails every request, and a run with
    # nothing sent is no test of the server. A path, query or fragment would
    # be glued before --path (".../?a=b/login/"): the base URL is only that.
    # The path as typed: yarl reads "/a/.." or "/%2e%2e" as "/", but the
    # target glues the URL as typed. Whitespace anywhere: yarl strips or drops it.
    try:
        parsed = URL(url)
        path = urlsplit(url).path
    except ValueError:
        parsed, path = URL(), ""
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.host
        or path not in ("", "/")
        or "?" in url
        or "#" in url
        or any(char.isspace() or not char.isprintable() for char in url)
    ):
        raise ValueError(f"URL must be http://HOST[:PORT] or https://HOST[:PORT], not {url!r}")


def check_path(path: str) -> None:
    """Raise ValueError unless ``path`` is a path from the root, with no query or fragment.

    The username goes in the query the tool builds: a ``?`` of the path's own
    would send another username (``/login/?username=evil``), a ``#`` none.
    """
    if not path.startswith("/") or "?" in path or "#" in path:
        raise ValueError(f"must start with / and hold no ? or #, not {path!r}")


def _check_positive(name: str, value: float, at_most: float, at_least: float = 0) -> None:
    # math.isfinite first: NaN compares false with everything, so "<= 0" lets it through.
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number above 0, not {value}")
    if not at_least <= value <= at_most:
        raise ValueError(f"{name} must be between {at_least:g} and {at_most:g}, not {value:g}")


def _check_names(names: Sequence[str]) -> None:
    if not names:
        raise ValueError("names is empty: give at least one username")
    for index, name in enumerate(names):
        # The server strips what str.strip() strips, and refuses an empty name.
        if not name or name != name.strip():
            raise ValueError(
                f"names[{index}] = {name!r}: empty or with surrounding whitespace, "
                "which the server strips"
            )
        try:
            name.encode()
        except UnicodeEncodeError:
            raise ValueError(f"names[{index}] = {name!r} is not valid Unicode") from None


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """What to send: ``requests`` (a count), ``duration`` (seconds) or ``names``; one of them.

    Closed loop by default: ``concurrency`` workers, each sending its next
    request when the last is answered. With ``rate`` the run is open loop:
    requests are due at ``rate`` per second (``arrivals`` constant or
    poisson) whatever the server does, at most ``concurrency`` in flight; with
    ``drop_late`` a request no worker is free for on time is not sent (k6's
    dropped iterations) instead of being sent late. See :mod:`.schedule`.

    ``url`` is the server's base URL (no path but ``/``, no query or fragment)
    and ``path`` (from ``/``, no query or fragment) is appended to it. Each
    request logs in one username, sent in the query string (GET) or a form
    (POST): ``{prefix}{run_id}-{n}`` for the n-th request, unique to the run; or,
    with ``names``, exactly those usernames, one request each, in order. With
    ``usernames`` False no username is sent (to load ``/``).
    """

    url: str
    requests: int | None = None
    duration: float | None = None
    concurrency: int = 10
    rate: float | None = None
    arrivals: Arrivals = "constant"
    drop_late: bool = False
    method: Method = "get"
    path: str = LOGIN_PATH
    prefix: str = "lt-"
    usernames: bool = True
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    names: Sequence[str] | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        _check_url(self.url)
        if (self.requests, self.duration, self.names).count(None) != 2:
            raise ValueError("give one of a number of requests, a duration or names")
        if self.requests is not None and self.requests < 1:
            raise ValueError(f"requests must be at least 1, not {self.requests}")
        if self.duration is not None:
            _check_positive("duration", self.duration, MAX_DURATION_S)
        if self.names is not None:
            if not self.usernames:
                raise ValueError("names are usernames: they cannot go with usernames=False")
            _check_names(self.names)
            object.__setattr__(self, "names", tuple(self.names))  # frozen, and never aliased
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(
                f"concurrency must be between 1 and {MAX_CONCURRENCY}, not {self.concurrency}"
            )
        if self.rate is not None:
            _check_positive("rate", self.rate, MAX_RATE, at_least=MIN_RATE)
        elif self.drop_late or self.arrivals != "constant":
            raise ValueError("drop_late and arrivals need a rate (an open-loop run)")
        if self.arrivals not in ("constant", "poisson"):
            raise ValueError(f"arrivals must be constant or poisson, not {self.arrivals!r}")
        if self.method not in ("get", "post"):
            raise ValueError(f"method must be get or post, not {self.method!r}")
        _check_positive("timeout", self.timeout, MAX_TIMEOUT_S)
        try:
            check_path(self.path)
        except ValueError as exc:
            raise ValueError(f"path {exc}") from None
        for name in ("prefix", "run_id"):
            value = getattr(self, name)
            if not _USERNAME_PART.fullmatch(value):
                raise ValueError(
                    f"{name} may only contain ASCII letters, digits and . _ ~ - "
                    f"(the server strips or escapes others, so the log would not "
                    f"hold the username sent), not {value!r}"
                )

    @property
    def target(self) -> str:
        """The URL every request goes to (before its username)."""
        return f"{self.url.rstrip('/')}/{self.path.lstrip('/')}"

    @property
    def total(self) -> int | None:
        """How many requests the run sends; ``None`` for a ``duration``."""
        return len(self.names) if self.names is not None else self.requests

    @property
    def stem(self) -> str | None:
        """What every username of this run starts with; ``None`` with ``names`` or none."""
        return f"{self.prefix}{self.run_id}-" if self.usernames and self.names is None else None
