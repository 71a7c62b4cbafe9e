"""What a run did: :class:`Summary`, and the logins it sent for :func:`.verify.verify_log`."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

from .config import LoadConfig
from .loop import LoopLag
from .stats import SecondStats, percentiles_ms
from .verify import Logins


class SentByStem(Mapping[str, int]):
    """``stem + str(n)`` for each n below ``issued``, each sent once.

    A mapping without a string per request, so a long run's verification
    does not hold a second copy of every username.
    """

    def __init__(self, stem: str, issued: int, unsent: Collection[int] = frozenset()) -> None:
        self._stem = stem
        self._issued = issued
        self._unsent = unsent  # numbered but never sent: dropped as late

    def __getitem__(self, username: str) -> int:
        digits = username[len(self._stem) :]
        # Exactly str(n) for a request sent: ASCII digits, no leading zero, below issued.
        if (
            username.startswith(self._stem)
            and digits.isascii()
            and digits.isdigit()
            and (digits == "0" or digits[0] != "0")
            and int(digits) < self._issued
            and int(digits) not in self._unsent
        ):
            return 1
        raise KeyError(username)

    def __iter__(self) -> Iterator[str]:
        return (f"{self._stem}{n}" for n in range(self._issued) if n not in self._unsent)

    def __len__(self) -> int:
        return self._issued - len(self._unsent)


@dataclass(frozen=True, slots=True)
class OpenLoop:
    """How an open-loop run kept its schedule (see :mod:`.schedule`).

    ``late`` requests started more than the tolerance after their due time;
    ``max_start_lag_s`` is the largest lag of any; ``dropped`` ones were not
    sent at all (``drop_late``, which counts those left due at the end too);
    ``unsent`` were due before the duration was over but not sent by then,
    the run too far behind. ``service`` holds the latencies from the
    actual send, in microseconds, beside the run's main ones from the due time.
    """

    rate: float
    arrivals: str
    achieved_rate: float
    late: int
    max_start_lag_s: float
    dropped: int
    service: HdrHistogram
    unsent: int = 0

    def service_ms(self) -> dict[str, float]:
        """Service-time percentiles and max in milliseconds; ``{}`` if nothing was answered."""
        return percentiles_ms(self.service)


@dataclass(frozen=True, slots=True)
class Summary:
    """What a run did. Latencies are in microseconds in ``latency`` (an HDR histogram).

    In open loop (``open_loop`` set) ``latency`` counts from each request's
    due time, so a stall shows in full however few requests were in flight.

    ``requests`` counts every request sent: answered (``statuses``) or failed
    without an answer (``errors``, by exception type). ``sent`` maps each
    username sent to how many times it was (once, unless ``names`` repeats
    one); ``acknowledged`` lists those answered 200, in no particular order.
    ``resends_refused`` counts the requests aiohttp would have sent a second
    time after their connection dropped (see :mod:`.client`); each is one of
    the ``errors``. ``loop_lag`` is how late the client's own loop ran: a run
    it made invalid (``valid`` false) measured the client, not the server.
    """

    config: LoadConfig
    requests: int
    statuses: dict[int, int]
    errors: dict[str, int]
    duration_s: float
    latency: HdrHistogram
    seconds: list[SecondStats]
    sent: Mapping[str, int]
    acknowledged: list[str]
    resends_refused: int
    loop_lag: LoopLag
    open_loop: OpenLoop | None = None

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
    def invalid_reason(self) -> str | None:
        """Why the run measured the client rather than the server; ``None`` if it did not."""
        return self.loop_lag.problem

    @property
    def valid(self) -> bool:
        """Whether the client kept up: its loop lag within :data:`.loop.LAG_LIMIT_MS` (p99)
        and :data:`.loop.LAG_MAX_LIMIT_MS` (max)."""
        return self.invalid_reason is None

    @property
    def stem(self) -> str | None:
        """What this run's usernames start with (see :attr:`LoadConfig.stem`)."""
        return self.config.stem

    def latency_ms(self) -> dict[str, float]:
        """Latency percentiles and max in milliseconds; ``{}`` if nothing was answered."""
        return percentiles_ms(self.latency)

    def logins(self, *, every_line: bool = False) -> Logins:
        """The logins this run sent, for :func:`~.verify.verify_log`.

        Log lines starting with the run's stem are the run's; with
        ``every_line`` every line of the log is (a log only this run wrote
        to), so a line for a username never sent is a fault.
        """
        run_prefix = "" if every_line else self.stem
        return Logins(self.sent, frozenset(self.acknowledged), run_prefix)
