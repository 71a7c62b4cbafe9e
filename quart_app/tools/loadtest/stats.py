"""Latency and throughput over time: one HDR histogram per second of the run.

Each second's histogram is summarised and folded into the run's total as soon
as the second is over, so memory stays flat however long the run, and each
response costs one ``record_value`` rather than one per histogram.
"""

from __future__ import annotations

from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

# Microseconds, 3 significant figures (0.1 % resolution), up to an hour: far
# beyond any request timeout, so nothing recorded is out of range.
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_FIGURES = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99)
"""The run's percentiles; the tail ones tell a stall from noise."""
SECOND_PERCENTILES = (50.0, 90.0, 99.0)
"""Each second's: a second holds too few answers for a finer tail."""
_SECOND_NS = 1_000_000_000


def new_histogram() -> HdrHistogram:
    """An empty latency histogram in microseconds."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


def percentiles_ms(
    histogram: HdrHistogram, percentiles: tuple[float, ...] = PERCENTILES
) -> dict[str, float]:
    """``percentiles`` ("p50", "p99.9", ...) and "max" of a microsecond histogram, in ms.

    ``{}`` if the histogram is empty.
    """
    if not histogram.get_total_count():
        return {}
    values = histogram.get_percentile_to_value_dict(list(percentiles))
    result = {f"p{p:g}": values[p] / 1000 for p in percentiles}
    result["max"] = histogram.get_max_value() / 1000
    return result


def encode(histogram: HdrHistogram) -> str:
    """The histogram in HdrHistogram's compressed base64 form, which every port decodes.

    Runs can be merged and compared later: ``HdrHistogram.decode(text)``.
    """
    return histogram.encode().decode("ascii")


@dataclass(frozen=True, slots=True)
class SecondStats:
    """One bucket of the run: responses completed in ``[start_s, start_s + span_s)``.

    ``latency_ms`` (p50/p90/p99/max) is empty when nothing was answered.
    ``failures`` counts non-200 answers and transport errors.
    """

    start_s: float
    span_s: float
    responses: int
    failures: int
    latency_ms: dict[str, float]

    @property
    def throughput(self) -> float:
        """Responses per second in this bucket."""
        return self.responses / self.span_s if self.span_s > 0 else 0.0


class Timeline:
    """Records each response in the histogram of the second it completed in."""

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.total = new_histogram()
        self.seconds: list[SecondStats] = []
        self._index = 0
        self._end_ns = start_ns + _SECOND_NS
        self._current = new_histogram()
        self._failures = 0

    def record(self, now_ns: int, latency_us: int, failed: bool) -> None:
        """A response that completed at ``now_ns`` (``perf_counter_ns``)."""
        if now_ns >= self._end_ns:
            self._roll(now_ns)
        self._current.record_value(min(latency_us, HIGHEST_US))
        self._failures += failed

    def record_error(self, now_ns: int) -> None:
        """A request that got no response at all."""
        if now_ns >= self._end_ns:
            self._roll(now_ns)
        self._failures += 1

    def finish(self, end_ns: int) -> None:
        """Close the last, usually partial, second at ``end_ns``."""
        if end_ns >= self._end_ns:
            self._roll(end_ns)
        span_s = (end_ns - self.start_ns) / _SECOND_NS - self._index
        if span_s > 0:  # a run ending exactly on a second has no last bucket
            self._close(span_s)

    def _roll(self, now_ns: int) -> None:
        # Completion times only move forward (one event loop, a monotonic
        # clock), so once a second is over nothing more can land in it.
        self._close(1.0)
        index = (now_ns - self.start_ns) // _SECOND_NS
        for empty in range(self._index + 1, index):
            self.seconds.append(SecondStats(float(empty), 1.0, 0, 0, {}))
        self._index = index
        self._end_ns = self.start_ns + (index + 1) * _SECOND_NS
        self._current = new_histogram()
        self._failures = 0

    def _close(self, span_s: float) -> None:
        histogram = self._current
        self.seconds.append(
            SecondStats(
                float(self._index),
                span_s,
                histogram.get_total_count(),
                self._failures,
                percentiles_ms(histogram, SECOND_PERCENTILES),
            )
        )
        self.total.add(histogram)
