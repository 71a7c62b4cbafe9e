"""The Prometheus metrics of one app, with ``prometheus_client``.

Counters and histograms of writes are updated once per batch by the writer,
never per login, so the login route pays nothing for them. The figures an
alert subtracts from one another (logins taken, records written, pending, set
aside, unconfirmed) are the writer's own integers, read at each scrape from
one :class:`Ledger`, so that ``taken - written - pending - set aside -
unconfirmed`` is never negative.

Under hypercorn with ``-w N`` the serving module points
``PROMETHEUS_MULTIPROC_DIR`` at a directory the workers share, and a scrape of
any worker reports all of them (counters summed, pending records summed over
live workers, the oldest age as their maximum). ``prometheus_client``'s
multiprocess mode keeps each value in its own slot, counters and gauges in
different files, and a scrape reads them at different moments: another
worker's pending records could be read after their count of logins taken and
before their count of records written. So the ledger is not kept there: each
worker writes its whole ledger to one small file, replaced atomically once a
second (:meth:`Metrics.publish`), and a scrape reads each worker's file once.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .processes import alive

SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
RECORDS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
REFUSAL_REASONS = (
    "bad_request",
    "too_large",
    "unsupported_type",
    "method_not_allowed",
    "timeout",
    "unreadable_target",
    "log_full",
    "log_unavailable",
)
"""The labels of ``quart_app_logins_refused_total``: docs/probes.md says what each counts."""
_LEDGER_FILE = re.compile(r"ledger_(\d+)\.json")


class Ledger(NamedTuple):
    """A writer's figures at one moment."""

    taken: int = 0
    written: int = 0
    pending: int = 0
    set_aside: int = 0
    unconfirmed: int = 0
    oldest_pending_age: float = 0.0


def _families(counters: Ledger, live: Ledger) -> Iterator[Metric]:
    # Counters from every worker that ever ran; gauges from the live ones only.
    yield CounterMetricFamily(
        "quart_app_logins_taken", "Logins whose record the writer took.", counters.taken
    )
    yield CounterMetricFamily(
        "quart_app_login_records_written",
        "Login records the store took (durable: and synced).",
        counters.written,
    )
    yield CounterMetricFamily(
        "quart_app_login_records_set_aside",
        "Login records the store can never take, logged at ERROR instead.",
        counters.set_aside,
    )
    yield CounterMetricFamily(
        "quart_app_login_records_unconfirmed",
        "Login records a stop could not confirm written, logged at ERROR instead.",
        counters.unconfirmed,
    )
    yield GaugeMetricFamily(
        "quart_app_login_records_pending", "Login records taken and not yet written.", live.pending
    )
    yield GaugeMetricFamily(
        "quart_app_login_oldest_pending_age_seconds",
        "Age of the oldest login record not yet written.",
        live.oldest_pending_age,
    )


class _LedgerCollector(Collector):
    """The ledger of this process (one worker, or the only process)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        ledger = self.metrics.ledger()
        return _families(ledger, ledger)


class _FleetLedgerCollector(Collector):
    """The ledgers of every worker of a server: the files in the shared directory."""

    def __init__(self, metrics: Metrics, directory: str) -> None:
        self.metrics = metrics
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        own = os.getpid()
        ledgers = {own: self.metrics.ledger()}  # this worker's own, as of now
        for name in os.listdir(self.directory):
            match = _LEDGER_FILE.fullmatch(name)
            if match and int(match[1]) != own and (ledger := _read_ledger(self.directory, name)):
                ledgers[int(match[1])] = ledger
        live = [ledger for pid, ledger in ledgers.items() if alive(pid)]
        counters = Ledger(*(sum(figures) for figures in zip(*ledgers.values(), strict=True)))
        gauges = Ledger(
            pending=sum(ledger.pending for ledger in live),
            oldest_pending_age=max((ledger.oldest_pending_age for ledger in live), default=0.0),
        )
        return _families(counters, gauges)


def _read_ledger(directory: str, name: str) -> Ledger | None:
    try:
        with open(os.path.join(directory, name), encoding="utf-8") as file:
            return Ledger(**json.load(file))
    except (OSError, ValueError, TypeError):  # gone since listed (a new server start)
        return None


class Metrics:
    """The metrics, registered in their own registry (one per app, so apps never clash).

    :attr:`ledger` gives the writer's figures; the writer sets it.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.ledger: Callable[[], Ledger] = Ledger
        r = self.registry
        r.register(_LedgerCollector(self))
        self.write_errors = Counter(
            "quart_app_login_write_errors",
            "Failed attempts to write or sync a batch of login records.",
            registry=r,
        )
        self.logins_refused = Counter(
            "quart_app_logins_refused",
            "Logins answered with a 4xx or 503, by reason.",
            ["reason"],
            registry=r,
        )
        self.client_address_unknown = Counter(
            "quart_app_login_client_address_unknown",
            "Logins logged with IP '-': no valid client address (a trusted header gave none).",
            registry=r,
        )
        self.batch_records = Histogram(
            "quart_app_login_batch_records",
            "Login records per batch handed to the store.",
            buckets=RECORDS_BUCKETS,
            registry=r,
        )
        self.write_seconds = Histogram(
            "quart_app_login_write_duration_seconds",
            "Time to write one batch of login records.",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.sync_seconds = Histogram(
            "quart_app_login_sync_duration_seconds",
            "Time to make a batch durable (fsync), in durable mode.",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        for reason in REFUSAL_REASONS:  # shown at 0 before the first refusal
            self.logins_refused.labels(reason)

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format: every worker's when there are several."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(_FleetLedgerCollector(self, directory))
            return generate_latest(registry)
        return generate_latest(self.registry)

    def publish(self) -> None:
        """With several workers, share this one's ledger with the others' scrapes.

        Blocking file I/O (a write and a rename): call it in a thread. Nothing
        to do in a single process, where a scrape reads the ledger itself.
        """
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return
        path = os.path.join(directory, f"ledger_{os.getpid()}.json")
        with open(f"{path}.tmp", "w", encoding="utf-8") as file:
            json.dump(self.ledger()._asdict(), file)
        os.replace(f"{path}.tmp", path)  # atomic: a scrape reads the old ledger or the new
