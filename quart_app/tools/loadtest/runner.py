"""Sending the load: ``concurrency`` workers looping over one shared aiohttp session.

Each worker takes the next request from the schedule (:mod:`.schedule`),
waits for its due time in open loop, sends it and records the answer.
"""

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
from .schedule import LATE_TOLERANCE_NS, Numbers, OpenSchedule, schedule_for
from .stats import HIGHEST_US, Timeline, new_histogram
from .summary import OpenLoop, SentByStem, Summary

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
        self.schedule = schedule_for(config, start_ns)
        # Once per run, not per worker: with names that is a quote() per name.
        self.build = _request_builder(config)
        self.timeline = Timeline(start_ns)
        # Open loop: latency from the due time goes to the timeline, from the send here.
        self.service = new_histogram() if config.rate is not None else None
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.acknowledged: list[int] = []
        self.dropped = Numbers()
        self.late = 0
        self.max_lag_ns = 0
        self.attempts: list[Attempts] = []
        self.loop_lag = LoopLag()

    def completed(self) -> int:
        """Requests answered or failed so far."""
        return sum(self.statuses.values()) + sum(self.errors.values())

    async def worker(self, session: aiohttp.ClientSession) -> None:
        """Send requests one after another, each at its due time, until the run is over."""
        # The hot loop: everything it touches is bound to a local first.
        config = self.config
        method = config.method.upper()
        headers = _FORM_HEADERS if method == "POST" and config.usernames else None
        build = self.build
        request = session.request
        next_due = self.schedule.next
        record = self.timeline.record
        service = self.service
        statuses = self.statuses
        acknowledged = self.acknowledged
        drop_late = config.drop_late
        schedule = self.schedule
        clock = time.perf_counter_ns
        sleep = asyncio.sleep
        attempts = track_attempts()
        self.attempts.append(attempts)
        dropped_at = None
        while (claimed := next_due()) is not None:
            n, due = claimed
            url, body = build(n)
            # Right after a drop, the time it was judged at: the next request is the
            # first not late then, and a fresh reading a few µs on could find it
            # just late too, and drop on and on without the loop ever turning.
            started = clock() if dropped_at is None else dropped_at
            dropped_at = None
            if due is None:  # closed loop: due now
                due = started
            else:
                if started < due:
                    await sleep((due - started) / 1e9)
                    started = clock()
                lag = started - due
                if drop_late and lag > LATE_TOLERANCE_NS:
                    # No worker was free in time, or this one woke late (the
                    # client busy): k6 drops the iteration, and with it every
                    # later one already as late.
                    assert isinstance(schedule, OpenSchedule)
                    self.dropped.add(schedule.drop_late(n, started))
                    dropped_at = started
                    continue
                if lag > LATE_TOLERANCE_NS:
                    self.late += 1
                if lag > self.max_lag_ns:
                    self.max_lag_ns = lag
            attempts.started = False
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
            # From the due time (a uvloop timer may wake a little early: then from the send).
            record(ended, (ended - min(due, started)) // 1000, status != 200)
            if service is not None:
                service.record_value(min((ended - started) // 1000, HIGHEST_US))
            if status == 200:
                acknowledged.append(n)

    def _usernames(self) -> tuple[Mapping[str, int], list[str]]:
        """How many times each username was sent, and those acknowledged."""
        config, issued = self.config, self.schedule.issued
        if config.names is not None:
            names = config.names
            sent = Counter(names[:issued])
            sent.subtract(names[n] for n in self.dropped)
            return +sent, [names[n] for n in self.acknowledged]
        if config.stem is not None:
            stem = config.stem
            sent_by_stem = SentByStem(stem, issued, unsent=self.dropped)
            return sent_by_stem, [f"{stem}{n}" for n in self.acknowledged]
        return {}, []

    def _open_loop(self) -> OpenLoop | None:
        config, schedule = self.config, self.schedule
        if not isinstance(schedule, OpenSchedule) or self.service is None:  # closed loop
            return None
        assert config.rate is not None
        sent = schedule.issued - len(self.dropped)
        dropped, unsent = len(self.dropped), schedule.unsent_at_end()
        # Due before the end (with -d) or at all (-n): not a count over a
        # window, which exceeds the target when one request falls in a short one.
        due = schedule.issued + unsent
        if config.drop_late:
            # Due before the end, and no worker started them on time (all
            # waiting on a stalled server): dropped, by what --drop-late means.
            dropped, unsent = dropped + unsent, 0
        return OpenLoop(
            rate=config.rate,
            arrivals=config.arrivals,
            # The target, in the share of what was due that was sent: never above it.
            achieved_rate=config.rate * sent / due if due else 0.0,
            late=self.late,
            max_start_lag_s=self.max_lag_ns / 1e9,
            dropped=dropped,
            service=self.service,
            unsent=unsent,
        )

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
            open_loop=self._open_loop(),
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
    once at the end, from the event loop; it must be quick (a test may stop
    the server from it once enough requests are done).
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
            if config.duration is not None:
                # A run of -d lasts -d, though the last request was due and
                # answered earlier (a slow rate): the throughput is over it.
                end_ns = run.start_ns + round(config.duration * 1e9)
                await asyncio.sleep(max(0, end_ns - time.perf_counter_ns()) / 1e9)
        finally:
            if ticker is not None:
                ticker.cancel()
        end_ns = time.perf_counter_ns()
    summary = run.summary(end_ns)
    if progress is not None:
        progress(summary.requests, summary.duration_s)
    return summary
