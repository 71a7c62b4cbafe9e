"""The Prometheus metrics of one app, with ``prometheus_client``.

Every series has the label ``app``, the app's name (Quart's ``app.name``):
one process may hold several apps, each with its own writer and metrics, and
with ``-w N`` every worker's apps write into one shared directory. A scrape of
an app reports that app's series only, in one process as across workers.

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
app of each worker writes its whole ledger to one small file
(:func:`ledger_file_name`), replaced atomically once a second
(:meth:`Metrics.publish`), and a scrape reads each file once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple
from urllib.parse import quote

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

DEFAULT_APP = "quart_app"
"""The ``app`` label of metrics built without an app's name (a writer built on its own)."""
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
_LEDGER_FILE = re.compile(r"ledger_(\d+)_.+\.json")  # the app's name is in the file
# Of the encoded app name: file names have at most 255 bytes.
_NAME_LIMIT = 120


class SpoolFigures(NamedTuple):
    """A spool's figures in one process: what waits in its files, and what became of the rest."""

    records: int = 0
    bytes: int = 0
    oldest_age: float = 0.0
    forwarded: int = 0
    rejected: int = 0
    torn: int = 0
    moved_aside: int = 0
    moved_aside_bytes: int = 0


class Ledger(NamedTuple):
    """A writer's figures at one moment, with its store's spool's (zero without one)."""

    taken: int = 0
    written: int = 0
    pending: int = 0
    set_aside: int = 0
    unconfirmed: int = 0
    oldest_pending_age: float = 0.0
    spool_records: int = 0
    spool_bytes: int = 0
    spool_oldest_age: float = 0.0
    spool_forwarded: int = 0
    spool_rejected: int = 0
    spool_torn: int = 0
    spool_moved_aside: int = 0
    spool_moved_aside_bytes: int = 0


def ledger_file_name(app: str, pid: int) -> str:
    """The name of the file holding the ledger of ``app`` in process ``pid``.

    ``ledger_PID_APP.json``, the app's name percent-encoded (letters, digits
    and ``_.-~`` stay as they are), so that no name can reach outside the
    directory. A longer encoded name is cut and ends with ``+`` and a hash of
    the whole: percent-encoding leaves no ``+``, so a cut name never equals
    another app's whole one. The file also holds the name itself.
    """
    encoded = quote(app, safe="")
    if len(encoded) > _NAME_LIMIT:
        digest = hashlib.sha256(app.encode()).hexdigest()[:16]
        encoded = f"{encoded[: _NAME_LIMIT - len(digest) - 1]}+{digest}"
    return f"ledger_{pid}_{encoded}.json"


def write_ledger(directory: str, app: str, pid: int, ledger: Ledger) -> None:
    """Replace the file of ``app``'s ledger in process ``pid`` with ``ledger``, atomically."""
    path = os.path.join(directory, ledger_file_name(app, pid))
    with open(f"{path}.tmp", "w", encoding="utf-8") as file:
        json.dump({"app": app, **ledger._asdict()}, file)
    os.replace(f"{path}.tmp", path)  # atomic: a scrape reads the old ledger or the new


_SPOOL_FAMILIES = (
    (
        GaugeMetricFamily,
        "quart_app_spool_records",
        "Login records in the spool, waiting for the database.",
        "spool_records",
    ),
    (GaugeMetricFamily, "quart_app_spool_bytes", "Bytes of the spool's files.", "spool_bytes"),
    (
        GaugeMetricFamily,
        "quart_app_spool_oldest_record_age_seconds",
        "Age of the oldest login record in the spool.",
        "spool_oldest_age",
    ),
    (
        CounterMetricFamily,
        "quart_app_spool_forwarded_records",
        "Spooled login records forwarded into the table.",
        "spool_forwarded",
    ),
    (
        CounterMetricFamily,
        "quart_app_spool_rejected_records",
        "Spooled login records the table refused for good, kept in rejected.jsonl.",
        "spool_rejected",
    ),
    (
        CounterMetricFamily,
        "quart_app_spool_torn_records",
        "Records a crash cut short at the end of a spool file (never acknowledged), dropped.",
        "spool_torn",
    ),
    (
        CounterMetricFamily,
        "quart_app_spool_moved_aside",
        "Unreadable pieces of spool files moved aside to damaged/ (each holds records).",
        "spool_moved_aside",
    ),
    (
        CounterMetricFamily,
        "quart_app_spool_moved_aside_bytes",
        "Bytes of the unreadable pieces of spool files moved aside.",
        "spool_moved_aside_bytes",
    ),
)


def _families(app: str, counters: Ledger, live: Ledger, *, spool: bool) -> Iterator[Metric]:
    # Counters from every worker that ever ran; gauges from the live ones only.
    if spool:
        for kind, name, documentation, attribute in _SPOOL_FAMILIES:
            source = live if kind is GaugeMetricFamily else counters
            family = kind(name, documentation, labels=("app",))
            family.add_metric((app,), getattr(source, attribute))
            yield family
    for kind, name, documentation, figure in (
        (
            CounterMetricFamily,
            "quart_app_logins_taken",
            "Logins whose record the writer took.",
            counters.taken,
        ),
        (
            CounterMetricFamily,
            "quart_app_login_records_written",
            "Login records the store took (durable: and synced).",
            counters.written,
        ),
        (
            CounterMetricFamily,
            "quart_app_login_records_set_aside",
            "Login records the store can never take, logged at ERROR instead.",
            counters.set_aside,
        ),
        (
            CounterMetricFamily,
            "quart_app_login_records_unconfirmed",
            "Login records a stop could not confirm written, logged at ERROR instead.",
            counters.unconfirmed,
        ),
        (
            GaugeMetricFamily,
            "quart_app_login_records_pending",
            "Login records taken and not yet written.",
            live.pending,
        ),
        (
            GaugeMetricFamily,
            "quart_app_login_oldest_pending_age_seconds",
            "Age of the oldest login record not yet written.",
            live.oldest_pending_age,
        ),
    ):
        family = kind(name, documentation, labels=("app",))
        family.add_metric((app,), figure)
        yield family


class _LedgerCollector(Collector):
    """The ledger of this process (one worker, or the only process)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        ledger = self.metrics.ledger()
        return _families(self.metrics.app, ledger, ledger, spool=self.metrics.spool)


class _FleetLedgerCollector(Collector):
    """The ledgers of one app in every worker of a server: its files in the shared directory."""

    def __init__(self, metrics: Metrics, directory: str) -> None:
        self.metrics = metrics
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        own, app = os.getpid(), self.metrics.app
        ledgers = {own: self.metrics.ledger()}  # this worker's own, as of now
        for name in os.listdir(self.directory):
            match = _LEDGER_FILE.fullmatch(name)
            if not match or int(match[1]) == own:
                continue
            # The app's name is read from the file: the one in its name may be cut.
            if (found := _read_ledger(self.directory, name)) and found[0] == app:
                ledgers[int(match[1])] = found[1]
        live = [ledger for pid, ledger in ledgers.items() if alive(pid)]
        counters = Ledger(*(sum(figures) for figures in zip(*ledgers.values(), strict=True)))
        gauges = Ledger(
            pending=sum(ledger.pending for ledger in live),
            oldest_pending_age=max((ledger.oldest_pending_age for ledger in live), default=0.0),
            spool_records=sum(ledger.spool_records for ledger in live),
            spool_bytes=sum(ledger.spool_bytes for ledger in live),
            spool_oldest_age=max((ledger.spool_oldest_age for ledger in live), default=0.0),
        )
        return _families(app, counters, gauges, spool=self.metrics.spool)


def _read_ledger(directory: str, name: str) -> tuple[str, Ledger] | None:
    try:
        with open(os.path.join(directory, name), encoding="utf-8") as file:
            figures = json.load(file)
        app = figures.pop("app")
        return (app, Ledger(**figures)) if isinstance(app, str) else None
    # OSError: gone since listed (a new server start); the others: not a ledger.
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


class _OneApp(Collector):
    """Of what ``collector`` reports for every app, the series labelled with one."""

    def __init__(self, collector: Collector, app: str) -> None:
        self.collector = collector
        self.app = app

    def collect(self) -> Iterator[Metric]:
        for family in self.collector.collect():
            family.samples = [s for s in family.samples if s.labels.get("app") == self.app]
            if family.samples:
                yield family


class RefusalCounter:
    """``quart_app_logins_refused_total`` of one app: its label ``app`` already given.

    ``labels(reason)`` gives the counter of one reason, as that of a counter
    labelled by reason alone would: callers need not know of the app.
    """

    def __init__(self, counter: Counter, app: str) -> None:
        self._counter = counter
        self._app = app

    def labels(self, reason: str) -> Counter:
        """The counter of refusals for ``reason`` (one of :data:`REFUSAL_REASONS`)."""
        return self._counter.labels(self._app, reason)


class Metrics:
    """The metrics of the app named ``app``, in their own registry (one per app).

    Each attribute is bound to the app's label already: ``write_errors.inc()``,
    ``batch_records.observe(n)``, ``logins_refused.labels(reason).inc()``. In
    one process, apps must have different names when ``PROMETHEUS_MULTIPROC_DIR``
    is set: their series and ledger files would be the same. :attr:`ledger`
    gives the writer's figures; the writer sets it.
    """

    def __init__(
        self, app: str = DEFAULT_APP, *, registry: CollectorRegistry | None = None
    ) -> None:
        if not app:  # Prometheus reads an empty label as none: apps would mix
            raise ValueError("the metrics' app label must not be empty")
        self.app = app
        self.registry = registry if registry is not None else CollectorRegistry()
        self.ledger: Callable[[], Ledger] = Ledger
        self.spool = False  # whether the store has a spool: its series are shown
        # Publishes run in threads: a late one must not replace a newer ledger with its older one.
        self._publishing = threading.Lock()
        r = self.registry
        r.register(_LedgerCollector(self))
        # Each is the child of its app's label, bound once here, not at each update.
        self.write_errors = Counter(
            "quart_app_login_write_errors",
            "Failed attempts to write or sync a batch of login records.",
            ["app"],
            registry=r,
        ).labels(app)
        self.logins_refused = RefusalCounter(
            Counter(
                "quart_app_logins_refused",
                "Logins answered with a 4xx or 503, by reason.",
                ["app", "reason"],
                registry=r,
            ),
            app,
        )
        self.client_address_unknown = Counter(
            "quart_app_login_client_address_unknown",
            "Logins logged with IP '-': no valid client address (a trusted header gave none).",
            ["app"],
            registry=r,
        ).labels(app)
        self.batch_records = Histogram(
            "quart_app_login_batch_records",
            "Login records per batch handed to the store.",
            ["app"],
            buckets=RECORDS_BUCKETS,
            registry=r,
        ).labels(app)
        self.write_seconds = Histogram(
            "quart_app_login_write_duration_seconds",
            "Time to write one batch of login records.",
            ["app"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        ).labels(app)
        self.sync_seconds = Histogram(
            "quart_app_login_sync_duration_seconds",
            "Time to make a batch durable (fsync), in durable mode.",
            ["app"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        ).labels(app)
        for reason in REFUSAL_REASONS:  # shown at 0 before the first refusal
            self.logins_refused.labels(reason)

    def exposition(self) -> bytes:
        """This app's metrics in the Prometheus text format: of every worker, if several."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            registry = CollectorRegistry()
            # The directory holds every app's files: keep this app's series.
            registry.register(
                _OneApp(multiprocess.MultiProcessCollector(None, directory), self.app)
            )
            registry.register(_FleetLedgerCollector(self, directory))
            return generate_latest(registry)
        return generate_latest(self.registry)

    def publish(self) -> None:
        """With several workers, share this app's ledger in this one with the others' scrapes.

        Blocking file I/O (a write and a rename): call it in a thread. Nothing
        to do in a single process, where a scrape reads the ledger itself.
        """
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return
        with self._publishing:  # the ledger is read under the lock: the last written is the newest
            write_ledger(directory, self.app, os.getpid(), self.ledger())
