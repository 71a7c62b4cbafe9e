"""When each request is due: as soon as a worker is free (closed loop), or on a clock (open loop).

Closed loop: ``concurrency`` workers each send their next request when the
previous one is answered; a server that stalls holds back the requests a real
population of users would have sent meanwhile ("coordinated omission").

Open loop (``rate``): request k is due at ``t0 + k/rate`` (constant arrivals),
or after exponential gaps of mean ``1/rate`` (Poisson arrivals), whatever
the server does; ``concurrency`` caps how many are in flight. A request that
cannot start on time keeps its due time, and its latency is counted from it.
With a duration, nothing is sent once it is over, however far behind.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Callable, Collection, Iterator

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


class Numbers(Collection[int]):
    """Request numbers as increasing, disjoint ranges: a count, not a set, of dropped ones."""

    def __init__(self) -> None:
        self.ranges: list[range] = []
        self._starts: list[int] = []
        self._count = 0

    def add(self, numbers: range) -> None:
        """Add ``numbers``, none of them added before (mostly, above all those)."""
        if numbers:
            # Kept in order: a worker that slept drops its own number after
            # later ones were dropped by others.
            index = bisect.bisect_right(self._starts, numbers.start)
            self.ranges.insert(index, numbers)
            self._starts.insert(index, numbers.start)
            self._count += len(numbers)

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, int):
            return False
        index = bisect.bisect_right(self._starts, number) - 1
        return index >= 0 and number in self.ranges[index]

    def __iter__(self) -> Iterator[int]:
        return (number for numbers in self.ranges for number in numbers)

    def __len__(self) -> int:
        return self._count


def _poisson(random_: random.Random, mean: float) -> int:
    """A Poisson-distributed count of the given mean: how many arrivals a span holds."""
    if mean > 50:  # the normal approximation, exact enough here and O(1)
        return max(0, round(random_.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, random_.random()
    while product > limit:
        count += 1
        product *= random_.random()
    return count


class OpenSchedule:
    """Numbers with due times at ``rate`` per second from ``start_ns``.

    With ``duration``, the run ends with the last request due before it is
    over, or when it is over, whichever comes first: nothing more is sent.
    """

    def __init__(
        self, config: LoadConfig, start_ns: int, clock: Callable[[], int] = time.perf_counter_ns
    ) -> None:
        assert config.rate is not None
        self._clock = clock
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
        if self._end_ns != math.inf and self._clock() >= self._end_ns:
            return None  # behind schedule at the end: what is due now is not sent
        self.issued = n + 1
        if self._poisson:
            self._due = due + round(self._random.expovariate(self._rate) * 1e9)
        else:  # from the start, not the last due time: no rounding error adds up
            self._due = self._start_ns + round((n + 1) * self._period_ns)
        return n, due

    def drop_late(self, n: int, now_ns: int) -> range:
        """Drop request ``n`` and, if it is the last issued, every later one already
        late at ``now_ns``.

        All at once, by arithmetic: one by one, a schedule far behind would
        hold the loop for as long as it takes to drop them all.
        """
        if n != self.issued - 1:
            # Its worker slept meanwhile: the later ones are other workers' to send or drop.
            return range(n, n + 1)
        threshold = min(now_ns - LATE_TOLERANCE_NS, self._end_ns)
        issued = self.issued
        if self._due < threshold:
            if self._poisson:
                mean = self._rate * (threshold - self._due) / 1e9
                issued += 1 + _poisson(self._random, mean)
                # Memoryless: the next arrival after the threshold is an exponential gap away.
                self._due = threshold + round(self._random.expovariate(self._rate) * 1e9)
            else:
                issued = max(issued, math.ceil((threshold - self._start_ns) / self._period_ns))
            issued = min(issued, self._total)
            if not self._poisson:
                self._due = self._start_ns + round(issued * self._period_ns)
        self.issued = issued
        return range(n, issued)

    def unsent_at_end(self) -> int:
        """How many requests were due before the duration was over but never issued."""
        if self._end_ns == math.inf or self._due >= self._end_ns:
            return 0
        if self._poisson:
            due = 1 + _poisson(self._random, self._rate * (self._end_ns - self._due) / 1e9)
        else:
            due = math.ceil((self._end_ns - self._start_ns) / self._period_ns) - self.issued
        return int(max(0, min(due, self._total - self.issued)))


def schedule_for(config: LoadConfig, start_ns: int) -> ClosedSchedule | OpenSchedule:
    """The schedule ``config`` asks for, starting at ``start_ns`` (``perf_counter_ns``)."""
    if config.rate is None:
        return ClosedSchedule(config, start_ns)
    return OpenSchedule(config, start_ns)
