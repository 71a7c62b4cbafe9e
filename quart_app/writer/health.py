"""The writer's figures: whether it is alive, how far it lags, its ledger and stats,
whether the app is ready for traffic, and publishing the figures for the other workers."""

from __future__ import annotations

import asyncio
from typing import Any

from ..metrics import Ledger, SpoolFigures
from .base import WriterBase


class Health(WriterBase):
    """Read the writer's figures, tell readiness from them; publish them while it runs."""

    @property
    def alive(self) -> bool:
        """Whether the writer task is there to write (running or draining)."""
        return self._task is not None and not self._task.done()

    def oldest_age(self) -> float:
        """Seconds since the oldest record not yet written was taken (0 if none)."""
        oldest = self._in_flight or self._queue
        if not oldest:
            return 0.0
        return max(0.0, (self.clock() - oldest[0].time).total_seconds())

    def ledger(self) -> Ledger:
        """The figures the metrics report, all of one moment."""
        spool = self.spool
        return Ledger(
            self.taken,
            self.written,
            self.pending,
            self.set_aside_count,
            self.unconfirmed,
            self.oldest_age(),
            *(spool.figures() if spool is not None else SpoolFigures()),
        )

    def stats(self) -> dict[str, Any]:
        """The writer's figures (no path or address: they are shown to anyone)."""
        return {
            "state": self.state,
            "pending": self.pending,
            "max_pending": self.max_pending,
            "oldest_pending_age_s": round(self.oldest_age(), 3),
            "written": self.written,
            "write_errors": self.write_errors,
            "set_aside": self.set_aside_count,
            "unconfirmed": self.unconfirmed,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "durable": self.durable,
            "store": self.store.kind,
            **({"spool": self.spool.stats()} if self.spool is not None else {}),
        }

    def not_ready_because(self, stall_seconds: float, high_water: float) -> list[str]:
        """Why the app should get no traffic now; empty when it is ready.

        ``stall_seconds``: a record waiting longer than this is a stall
        (``LOGIN_LOG_STALL_SECONDS``); ``high_water``: the share of
        ``max_pending`` the queue may fill (``LOGIN_LOG_HIGH_WATER``). Each
        reason is one phrase, for ``/readyz`` and ``/healthz``.
        """
        if self.state != "running":
            return [f"the login log is {self.state}"]
        reasons = []
        if not self.alive:
            reasons.append("the writer task is not running")
        if self.failing:
            reasons.append("writes are failing")
        if self.oldest_age() > stall_seconds:
            reasons.append(f"a record has waited over {stall_seconds:g} s")
        if self.pending > high_water * self.max_pending:
            reasons.append(f"over {high_water:.0%} of the queue is full")
        if self.spool is not None:
            reasons += self.spool.not_ready_because()
        return reasons

    async def _publish_every(self, interval: float) -> None:
        # A task of its own: the figures must move while a write hangs.
        while True:
            await self._publish()
            await asyncio.sleep(interval)

    async def _publish(self) -> None:
        try:
            await asyncio.to_thread(self.metrics.publish)
        except OSError as exc:  # the metrics directory went away: scrapes miss this worker
            self.logger.warning("login log: cannot publish the metrics: %s", exc)
