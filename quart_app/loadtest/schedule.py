"""When each request is due: as soon as a worker is free (closed loop), or on a clock (open loop).

Closed loop: ``concurrency`` workers each send their next request when the
previous one is answered; a server that stalls holds back the requests a real
population of users would have sent meanwhile ("coordinated omission").

Open loop (``rate``): request k is due at ``t0 + k/rate`` (constant arrivals),
or after exponential gaps of mean ``1/rate`` (Poisson arrivals), whatever
the server does; ``concurrency`` caps how many are in flight. A request that
cannot start on time keeps its due time, and its latency is counted from it.
"""

from __future__ import annotations

import math
import random
import time

from .config import LoadConfig

LATE_TOLERANCE_NS = 2_000_000
"""A request is late when it starts more than 2 ms after its due time.

uvloop's timers have millisecond resolution (a sleep under 1 ms rounds to
none), so a request sent on time starts within about a millisecond either
side of its due time; the tolerance leaves room for that and for the loop's
own turn, and no more.
"""

Due = tuple[int, int | None]
"""A request's number and its due time (``perf_counter_ns``), ``None`` in closed loop."""


class ClosedSchedule:
    """Numbers 0, 1, 2... until ``requests`` have gone or ``duration`` is over; never due."""

    def __init__(self, config: LoadConfig, start_ns: int) -> None:
        self.issued = 0
        self._total = config.total if config.total is not None else math.inf
        self._end_ns = (
            start_ns + int(config.duration * 1e9) if config.duration is not None else None
        )

    def next(self) -> Due | None:
        """The next request, or ``None`` when the run is over."""
        if self.issued >= self._total:
            return None
        if self._end_ns is not None and time.perf_counter_ns() >= self._end_ns:
            return None
        self.issued += 1
        return self.issued - 1, None


class OpenSchedule:
    """Numbers with due times at ``rate`` per second from ``start_ns``.

    With ``duration``, the run ends with the last request due before it is over.
    """

    def __init__(self, config: LoadConfig, start_ns: int) -> None:
        assert config.rate is not None
        self.issued = 0
        self._start_ns = start_ns
        self._period_ns = 1e9 / config.rate
        self._rate = config.rate
        self._poisson = config.arrivals == "poisson"
        self._random = random.Random()
        self._due = start_ns
        self._total = config.total if config.total is not None else math.inf
        self._end_ns = (
            start_ns + int(config.duration * 1e9) if config.duration is not None else math.inf
        )

    def next(self) -> Due | None:
        """The next request and its due time, or ``None`` when the run is over."""
        n, due = self.issued, self._due
        if n >= self._total or due >= self._end_ns:
            return None
        self.issued = n + 1
        if self._poisson:
            self._due = due + round(self._random.expovariate(self._rate) * 1e9)
        else:  # from the start, not the last due time: no rounding error adds up
            self._due = self._start_ns + round((n + 1) * self._period_ns)
        return n, due


def schedule_for(config: LoadConfig, start_ns: int) -> ClosedSchedule | OpenSchedule:
    """The schedule ``config`` asks for, starting at ``start_ns`` (``perf_counter_ns``)."""
    if config.rate is None:
        return ClosedSchedule(config, start_ns)
    return OpenSchedule(config, start_ns)
