"""The client's event loop: uvloop to run on, and a ticker that measures its lag.

A load generator that falls behind measures itself, not the server: a
request due at t leaves at t + lag, and every answer waits its turn too. The
ticker asks to wake every :data:`TICK_S` and records how late it woke.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from hdrh.histogram import HdrHistogram

from .stats import new_histogram, percentiles_ms

T = TypeVar("T")

TICK_S = 0.01
"""How often the ticker wakes: 100 wake-ups a second cost next to nothing."""
LAG_LIMIT_MS = 20.0
"""A run whose loop lag p99 is above this is invalid: see :class:`LoopLag`."""
LAG_MAX_LIMIT_MS = 100.0
"""A run whose largest loop lag is above this is invalid: see :class:`LoopLag`."""
LAG_PERCENTILE = 99.0


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when it is installed (not on Windows), else None (asyncio's)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop if installed, else on asyncio's own loop.

    uvloop is what hypercorn.toml serves with, and a faster loop leaves more
    of a load generator's CPU for sending requests.
    """
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


class LoopLag:
    """How late the running loop wakes a timer, in microseconds (an HDR histogram).

    The run is invalid when the lag's p99 exceeds :data:`LAG_LIMIT_MS`: the
    client was then too busy (or starved of CPU) to send on time or read
    answers when they came. A percentile, so that one garbage collection or
    one burst of answers after a server stall (a few ms) does not void a run;
    but one stall above :data:`LAG_MAX_LIMIT_MS` does too, since the ticker
    samples it only once however many requests it delayed (the client
    stopped, or starved of CPU for that long).
    """

    def __init__(self) -> None:
        self.histogram: HdrHistogram = new_histogram()

    @asynccontextmanager
    async def measuring(self) -> AsyncIterator[LoopLag]:
        """Sample the loop's lag while the block runs."""
        task = asyncio.create_task(self._tick())
        try:
            yield self
        finally:
            task.cancel()

    async def _tick(self) -> None:
        clock = time.perf_counter_ns
        record = self.histogram.record_value
        tick_ns = int(TICK_S * 1e9)
        while True:
            due = clock() + tick_ns
            await asyncio.sleep(TICK_S)
            # uvloop's timers have millisecond resolution: a wake slightly early is on time.
            record(max(clock() - due, 0) // 1000)

    def figures_ms(self) -> dict[str, float]:
        """The lag's p50, p99 and max in milliseconds; ``{}`` before the first tick."""
        return percentiles_ms(self.histogram, (50.0, LAG_PERCENTILE))

    @property
    def problem(self) -> str | None:
        """Why the run is invalid, or ``None`` if the lag's p99 and max stayed within limits."""
        if not self.histogram.get_total_count():
            return None
        p99_ms = self.histogram.get_value_at_percentile(LAG_PERCENTILE) / 1000
        max_ms = self.histogram.get_max_value() / 1000
        if p99_ms > LAG_LIMIT_MS:
            what = f"p99 was {p99_ms:.1f} ms, above {LAG_LIMIT_MS:g} ms"
        elif max_ms > LAG_MAX_LIMIT_MS:
            what = f"max was {max_ms:,.1f} ms, above {LAG_MAX_LIMIT_MS:g} ms"
        else:
            return None
        return (
            f"the client's event-loop lag {what}: the client fell behind, "
            "so these figures measure it, not the server"
        )
