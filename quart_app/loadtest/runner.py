"""Sending the load: ``concurrency`` workers looping over one shared aiohttp session."""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

# aiohttp rather than httpx: several times less client CPU per request, so one
# client process outruns one hypercorn worker and the server is what is measured.
import aiohttp
from hdrh.histogram import HdrHistogram
from yarl import URL

from .client import Attempts, open_session, track_attempts
from .stats import SecondStats, Timeline, percentiles_ms

LOGIN_PATH = "/login/"
_FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
# RFC 3986's unreserved characters: sent as they are, and neither stripped nor
# escaped by the server, so the log holds exactly the username that was sent.
_USERNAME_PART = re.compile(r"[A-Za-z0-9._~-]*")
# What a request can fail with short of an HTTP answer: refused or reset
# connections, a malformed response, the timeout.
_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)

Method = Literal["get", "post"]
ProgressCallback = Callable[[int, float], None]
"""Called with (requests completed, seconds elapsed) a few times a second."""


def _check_url(url: str) -> None:
    # Anything else reaches aiohttp, fails every request, and a run with
    # nothing sent is no test of the server.
    try:
        parsed = URL(url)
    except ValueError:
        parsed = URL()
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"URL must be http://HOST[:PORT] or https://HOST[:PORT], not {url!r}")


def _check_positive(name: str, value: float) -> None:
    # math.isfinite first: NaN compares false with everything, so "<= 0" lets it through.
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number above 0, not {value}")


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """What to send: give ``requests`` (a count) or ``duration`` (seconds), not both.

    ``url`` is the server's base URL and ``path`` is appended to it. With
    ``usernames`` each request logs in a username unique to this run,
    ``{prefix}{run_id}-{n}``, sent in the query string (GET) or a form (POST).
    """

    url: str
    requests: int | None = None
    duration: float | None = None
    concurrency: int = 10
    method: Method = "get"
    path: str = LOGIN_PATH
    prefix: str = "lt-"
    usernames: bool = True
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    timeout: float = 30.0

    def __post_init__(self) -> None:
        _check_url(self.url)
        if (self.requests is None) == (self.duration is None):
            raise ValueError("give either a number of requests or a duration, not both")
        if self.requests is not None and self.requests < 1:
            raise ValueError(f"requests must be at least 1, not {self.requests}")
        if self.duration is not None:
            _check_positive("duration", self.duration)
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.method not in ("get", "post"):
            raise ValueError(f"method must be get or post, not {self.method!r}")
        _check_positive("timeout", self.timeout)
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
    def stem(self) -> str | None:
        """What every username of this run starts with; ``None`` if none are sent."""
        return f"{self.prefix}{self.run_id}-" if self.usernames else None


@dataclass(frozen=True, slots=True)
class Summary:
    """What a run did. Latencies are in microseconds in ``latency`` (an HDR histogram).

    ``requests`` counts every request sent: answered (``statuses``) or failed
    without an answer (``errors``, by exception type). ``acknowledged`` lists
    the usernames whose login was answered 200, in no particular order.
    ``resends_refused`` counts the requests aiohttp would have sent a second
    time after their connection dropped (see :mod:`.client`); each is one of
    the ``errors``.
    """

    config: LoadConfig
    requests: int
    statuses: dict[int, int]
    errors: dict[str, int]
    duration_s: float
    latency: HdrHistogram
    seconds: list[SecondStats]
    acknowledged: list[str]
    resends_refused: int = 0

    @property
    def answered(self) -> int:
        """Requests that got an HTTP answer, whatever its status."""
        return sum(self.statuses.values())

    @property
    def error_count(self) -> int:
        """Requests that got no answer."""
        return sum(self.errors.values())

    @property
    def rps(self) -> float:
        """Answers per second over the whole run."""
        return self.answered / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def stem(self) -> str | None:
        """What this run's usernames start with (see :attr:`LoadConfig.stem`)."""
        return self.config.stem

    def latency_ms(self) -> dict[str, float]:
        """p50, p90, p99 and max latency in milliseconds; ``{}`` if nothing was answered."""
        return percentiles_ms(self.latency)


def _request_builder(config: LoadConfig) -> Callable[[int], tuple[URL, bytes | None]]:
    """The URL and body of request ``n``, built with as little work as possible."""
    target = URL(config.target)
    if config.stem is None:
        return lambda n: (target, None)
    stem = quote(config.stem, safe="")
    if config.method == "post":
        prefix = f"username={stem}".encode()
        return lambda n: (target, prefix + str(n).encode())
    # encoded=True: the query is already quoted, so yarl neither parses nor
    # requotes it again on every request.
    base = f"{target}?username={stem}"
    return lambda n: (URL(f"{base}{n}", encoded=True), None)


class _Run:
    """The state the workers share; one event loop, so no locks are needed."""

    def __init__(self, config: LoadConfig, start_ns: int) -> None:
        self.config = config
        self.start_ns = start_ns
        self.timeline = Timeline(start_ns)
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.acknowledged: list[int] = []
        self.attempts: list[Attempts] = []
        self.issued = 0
        self._deadline_ns = (
            start_ns + int(config.duration * 1e9) if config.duration is not None else None
        )

    def next_index(self) -> int | None:
        """The number of the next request to send, or ``None`` when the run is over."""
        if self._deadline_ns is not None:
            if time.perf_counter_ns() >= self._deadline_ns:
                return None
        elif self.issued >= (self.config.requests or 0):
            return None
        self.issued += 1
        return self.issued - 1

    def completed(self) -> int:
        """Requests answered or failed so far."""
        return sum(self.statuses.values()) + sum(self.errors.values())

    async def worker(self, session: aiohttp.ClientSession) -> None:
        """Send requests one after another until the run is over."""
        # The hot loop: everything it touches is bound to a local first.
        method = self.config.method.upper()
        headers = _FORM_HEADERS if method == "POST" and self.config.usernames else None
        build = _request_builder(self.config)
        request = session.request
        next_index = self.next_index
        record = self.timeline.record
        statuses = self.statuses
        acknowledged = self.acknowledged
        clock = time.perf_counter_ns
        attempts = track_attempts()
        self.attempts.append(attempts)
        while (n := next_index()) is not None:
            url, body = build(n)
            attempts.started = False
            started = clock()
            try:
                # Redirects are not followed: one request, one exchange, as wrk does.
                async with request(
                    method, url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    await response.read()  # read to the end, or the connection cannot be reused
            except _TRANSPORT_ERRORS as exc:
                name = type(exc).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
                self.timeline.record_error(clock())
                continue
            ended = clock()
            status = response.status
            statuses[status] = statuses.get(status, 0) + 1
            record(ended, (ended - started) // 1000, status != 200)
            if status == 200:
                acknowledged.append(n)

    def summary(self, end_ns: int) -> Summary:
        """The figures of the finished run."""
        self.timeline.finish(end_ns)
        stem = self.config.stem
        return Summary(
            config=self.config,
            requests=self.completed(),
            statuses=dict(sorted(self.statuses.items())),
            errors=self.errors,
            duration_s=(end_ns - self.start_ns) / 1e9,
            latency=self.timeline.total,
            seconds=self.timeline.seconds,
            acknowledged=[f"{stem}{n}" for n in self.acknowledged] if stem is not None else [],
            resends_refused=sum(attempts.refused for attempts in self.attempts),
        )


async def _report_progress(run: _Run, progress: ProgressCallback, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        progress(run.completed(), (time.perf_counter_ns() - run.start_ns) / 1e9)


async def run_load(
    config: LoadConfig, *, progress: ProgressCallback | None = None, progress_interval: float = 0.2
) -> Summary:
    """Send the load ``config`` describes and return what happened.

    ``progress``, if given, is called every ``progress_interval`` seconds and
    once at the end, from the event loop; it must be quick.
    """
    workers = min(config.concurrency, config.requests or config.concurrency)
    async with open_session(config.concurrency, config.timeout) as session:
        run = _Run(config, time.perf_counter_ns())
        ticker = (
            asyncio.create_task(_report_progress(run, progress, progress_interval))
            if progress is not None
            else None
        )
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(run.worker(session))
        finally:
            if ticker is not None:
                ticker.cancel()
        end_ns = time.perf_counter_ns()
    summary = run.summary(end_ns)
    if progress is not None:
        progress(summary.requests, summary.duration_s)
    return summary
