"""Sending the load: ``concurrency`` workers looping over one shared aiohttp session."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from urllib.parse import quote

# aiohttp rather than httpx: several times less client CPU per request, so one
# client process outruns one hypercorn worker and the server is what is measured.
import aiohttp
from yarl import URL

from .client import Attempts, open_session, track_attempts
from .config import LoadConfig
from .loop import LoopLag
from .stats import Timeline
from .summary import SentByStem, Summary

_FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
# What a request can fail with short of an HTTP answer: refused or reset
# connections, a malformed response, the timeout.
_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)

ProgressCallback = Callable[[int, float], None]
"""Called with (requests completed, seconds elapsed) a few times a second."""


def _request_builder(config: LoadConfig) -> Callable[[int], tuple[URL, bytes | None]]:
    """The URL and body of request ``n``, built with as little work as possible."""
    target = URL(config.target)
    if config.names is not None:
        names = [quote(name, safe="") for name in config.names]
        if config.method == "post":
            return lambda n: (target, f"username={names[n]}".encode())
        return lambda n: (URL(f"{target}?username={names[n]}", encoded=True), None)
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
        self.loop_lag = LoopLag()
        self.issued = 0
        self._deadline_ns = (
            start_ns + int(config.duration * 1e9) if config.duration is not None else None
        )

    def next_index(self) -> int | None:
        """The number of the next request to send, or ``None`` when the run is over."""
        if self._deadline_ns is not None:
            if time.perf_counter_ns() >= self._deadline_ns:
                return None
        elif self.issued >= (self.config.total or 0):
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

    def _usernames(self) -> tuple[Mapping[str, int], list[str]]:
        """How many times each username was sent, and those acknowledged."""
        config = self.config
        if config.names is not None:
            names = config.names
            return Counter(names[: self.issued]), [names[n] for n in self.acknowledged]
        if config.stem is not None:
            stem = config.stem
            return SentByStem(stem, self.issued), [f"{stem}{n}" for n in self.acknowledged]
        return {}, []

    def summary(self, end_ns: int) -> Summary:
        """The figures of the finished run."""
        self.timeline.finish(end_ns)
        sent, acknowledged = self._usernames()
        return Summary(
            config=self.config,
            requests=self.completed(),
            statuses=dict(sorted(self.statuses.items())),
            errors=self.errors,
            duration_s=(end_ns - self.start_ns) / 1e9,
            latency=self.timeline.total,
            seconds=self.timeline.seconds,
            sent=sent,
            acknowledged=acknowledged,
            resends_refused=sum(attempts.refused for attempts in self.attempts),
            loop_lag=self.loop_lag,
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
    workers = min(config.concurrency, config.total or config.concurrency)
    async with open_session(config.concurrency, config.timeout) as session:
        run = _Run(config, time.perf_counter_ns())
        ticker = (
            asyncio.create_task(_report_progress(run, progress, progress_interval))
            if progress is not None
            else None
        )
        try:
            async with run.loop_lag.measuring(), asyncio.TaskGroup() as group:
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
