"""The Prometheus metrics of one app, with ``prometheus_client``.

Counters and histograms are updated once per batch by the writer, or once a
second from plain ints, never per login, so the login route pays nothing for
them; the gauges of pending records are set once a second too, and at each
scrape. Under hypercorn with ``-w N`` the serving
module points ``PROMETHEUS_MULTIPROC_DIR`` at a directory the workers share,
and a scrape of any worker reports all of them (counters and pending summed,
the oldest age as the maximum).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

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


class Metrics:
    """The metrics, registered in their own registry (one per app, so apps never clash)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.logins_taken = Counter(
            "quart_app_logins_taken", "Logins whose record the writer took.", registry=r
        )
        self.records_written = Counter(
            "quart_app_login_records_written", "Login records the store took.", registry=r
        )
        self.write_errors = Counter(
            "quart_app_login_write_errors",
            "Failed attempts to write or sync a batch of login records.",
            registry=r,
        )
        self.records_set_aside = Counter(
            "quart_app_login_records_set_aside",
            "Login records the store can never take, logged at ERROR instead.",
            registry=r,
        )
        self.records_unconfirmed = Counter(
            "quart_app_login_records_unconfirmed",
            "Login records a stop could not confirm written, logged at ERROR instead.",
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
        self.pending = Gauge(
            "quart_app_login_records_pending",
            "Login records taken and not yet written.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.oldest_pending_age = Gauge(
            "quart_app_login_oldest_pending_age_seconds",
            "Age of the oldest login record not yet written.",
            multiprocess_mode="livemax",
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
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
