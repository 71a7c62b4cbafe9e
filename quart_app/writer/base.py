"""What every part of the writer shares: its defaults, settings, figures, queue and events."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from ..metrics import Ledger, Metrics
from ..records import LoginRecord
from ..stores import RecordStore

MAX_BATCH = 2048
"""The most records a store is handed at once, by default."""

LINGER = 0.05
"""Seconds: under load, without durable mode, batches start at most this often."""

LAG_BOUND = 2 * LINGER
"""Seconds: without durable mode, once the oldest record not yet written was taken longer
ago than this, logins wait for their own record to be written. Twice the linger, as the
oldest record of a batch waits one linger for its batch to start: no more than this much of
answered logins is ever only in memory."""


def utc_now() -> datetime:
    """The current time, aware, in UTC: the writer's default clock."""
    return datetime.now(UTC)


class WriterBase:
    """The writer's settings and state, which the producers' side, the writing loop and
    the figures all read and change (on the event loop's thread only)."""

    retry_first_delay = 0.05
    retry_max_delay = 2.0
    lag_bound = LAG_BOUND
    ledger: Callable[[], Ledger]  # the figures a scrape reads: Health.ledger

    def __init__(
        self,
        store: RecordStore,
        *,
        max_pending: int = 10_000,
        full_timeout: float = 5.0,
        durable: bool = False,
        drain_timeout: float = 15.0,
        linger: float = LINGER,
        max_batch: int = MAX_BATCH,
        logger: logging.Logger | None = None,
        metrics: Metrics | None = None,
        publish_interval: float = 1.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """``linger``: under load, without durable mode, batches start at most this often.

        ``max_batch`` caps the records handed to the store at once.
        ``publish_interval``: seconds between two publishings of the figures
        for the other workers' scrapes. ``clock`` gives the time (aware, UTC)
        that record ages and error times are read from; a test may pass one
        it moves. The lag bound is kept with ``time.monotonic`` instead, read
        on every login's path.
        """
        self.store = store
        self.max_pending = max_pending
        self.full_timeout = full_timeout
        self.durable = durable
        self.drain_timeout = drain_timeout
        self.linger = linger
        self.max_batch = max_batch
        self.logger = logger or logging.getLogger(__package__)
        self.metrics = metrics or Metrics()
        self.metrics.ledger = self.ledger
        self.metrics.spool = self.spool is not None
        self.publish_interval = publish_interval
        self.clock = clock
        self.state = "stopped"  # then "running", "draining", "stopped"; or "failed"
        self.pending = 0
        self.taken = 0
        self.written = 0
        self.write_errors = 0
        self.set_aside_count = 0
        self.unconfirmed = 0
        self.failing = False
        self._logged_cause: str | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self._queue: list[LoginRecord] = []
        self._queue_done: asyncio.Future[Sequence[LoginRecord]] | None = None
        # Monotonic times the oldest record of the queue, and of the group being
        # written, were taken (inf: none): how far the store lags behind the logins.
        self._queue_since = math.inf
        self._in_flight_since = math.inf
        # Past this monotonic time (-inf while writes fail) a login waits for its record.
        self._lag_deadline = math.inf
        # Taken by the writer and not yet confirmed (written; durable: synced).
        self._in_flight: list[LoginRecord] = []
        self._in_flight_done: asyncio.Future[Sequence[LoginRecord]] | None = None
        # Set by refuse_waiting(): why a login that would wait is refused at once.
        self._refusing: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._work = asyncio.Event()  # set when records are waiting
        self._room = asyncio.Event()  # set when records were stored
        self._hurry = asyncio.Event()  # set when lingering would keep a login waiting
        self._refused = asyncio.Event()  # set by refuse_waiting()

    @property
    def spool(self) -> Any:
        """The store's spool (a :class:`~quart_app.spool.SpoolStore`), or None."""
        return getattr(self.store, "spool", None)

    def _track_lag(self) -> None:
        # A deadline, recomputed when the oldest record or the failing state
        # changes, so that the login path compares one number with the clock.
        oldest = min(self._in_flight_since, self._queue_since)
        self._lag_deadline = -math.inf if self.failing else oldest + self.lag_bound
