"""What only a process served by hypercorn needs: :func:`prepare_for_hypercorn`.

The project's own entry (:mod:`quart_app.asgi`) calls it, and so can any app
using :class:`~quart_app.LoginAudit`, in one line. Its parts: :mod:`.stop`
(signals, the metrics directory, answers before hypercorn's cancel, the exit)
and hypercorn's protocols, so that every request is answered and every answer
has a reason (:mod:`.http1`, :mod:`.http1_errors`, :mod:`.http2`,
:mod:`.connections`).
"""

from __future__ import annotations

import gc
import os
import sys
from typing import TYPE_CHECKING

from .stop import (
    ANSWER_MARGIN,
    DRAIN_MARGIN,
    EXIT_UNCONFIRMED,
    METRICS_DIR_PREFIX,
    check_stop_bounds,
    finish,
    logger,
    refuse_waiting_logins_before_cancel,
    served_by_hypercorn,
    stop_gracefully_on_signals,
    use_shared_metrics_directory,
    worker_parent,
)

if TYPE_CHECKING:
    from quart import Quart

__all__ = [
    "ANSWER_MARGIN",
    "DRAIN_MARGIN",
    "EXIT_UNCONFIRMED",
    "METRICS_DIR_PREFIX",
    "prepare_for_hypercorn",
    "use_shared_metrics_directory",
]


def prepare_for_hypercorn(app: Quart) -> None:
    """Give ``app``, served by hypercorn, the project's own stop behaviour and protocol fixes.

    Call it in the module hypercorn loads. At start it refuses hypercorn stop bounds that
    would lose records; on SIGTERM, SIGINT or SIGHUP (to the server or to one
    worker) and when a worker's parent dies, the process stops gracefully:
    waiting logins are answered 503 before hypercorn cancels them, the writer
    drains, and a process that could not confirm every record exits with
    :data:`EXIT_UNCONFIRMED`. Served otherwise (``app.test_app()``), it does nothing.
    """
    from ..guard import RequestGuard
    from ..state import KEY
    from .connections import end_cancelled_connections_quietly
    from .http1 import accept_utf8_query_strings
    from .http1_errors import explain_http1_errors
    from .http2 import answer_every_http2_stream

    if "prometheus_client" not in sys.modules:  # it reads the directory once, when imported
        use_shared_metrics_directory()
    # So that curl's raw UTF-8 query strings are answered, not refused by h11.
    accept_utf8_query_strings()
    # So that what h11 cannot parse is answered with the reason, not an empty body.
    explain_http1_errors()
    # So that every HTTP/2 request the app takes is answered, and every other refused.
    answer_every_http2_stream()
    # So that a stop cancelling connections at graceful_timeout logs no traceback for each.
    end_cancelled_connections_quietly()
    # So that a request target or Host Quart cannot decode is a 400 with the reason, not a 500.
    if not isinstance(app.asgi_app, RequestGuard):
        log = app.extensions.get(KEY)
        app.asgi_app = RequestGuard(  # type: ignore[method-assign]
            app.asgi_app, log.metrics if log else None
        )

    served = False  # by hypercorn, this time: app.test_app() needs none of this

    @app.before_serving
    async def prepare_process() -> None:
        nonlocal served
        log = app.extensions.get(KEY)
        if log is None:
            raise RuntimeError(f"prepare_for_hypercorn: LoginAudit is not set up for {app.name!r}")
        served = served_by_hypercorn()
        if not served:
            return
        check_stop_bounds(log.settings.login_log_drain_timeout)
        if worker_parent() is not None and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            logger.warning(
                "PROMETHEUS_MULTIPROC_DIR is not set: /metrics shows this worker only, not all"
            )
        stop_gracefully_on_signals()
        refuse_waiting_logins_before_cancel(log.writer)
        # What start-up made (modules, the app, hypercorn's objects) lives as long as
        # the process: out of the collector's sight, a full collection walks only
        # what requests made (bench/README.md).
        gc.collect()
        gc.freeze()

    @app.after_serving
    async def finish_process() -> None:
        if not served:
            return
        writer = app.extensions[KEY].writer
        await writer.stop()  # done already when LoginAudit's hook ran first
        finish(writer.unconfirmed)
