"""What hypercorn serves: ``hypercorn --config hypercorn.toml quart_app.asgi:app``.

Importing this module builds the app from ``QUART_*`` settings and prepares
the process for serving (see :mod:`quart_app.serving`); import
:func:`quart_app.create_app` instead to build an app without touching the
process.
"""

from __future__ import annotations

from .serving import (
    check_stop_bounds,
    finish,
    refuse_waiting_logins_before_cancel,
    stop_gracefully_on_signals,
    use_shared_metrics_directory,
)

# Before anything imports prometheus_client, which reads it once.
use_shared_metrics_directory()

from . import create_app  # noqa: E402
from .connections import end_cancelled_connections_quietly  # noqa: E402
from .http1 import accept_utf8_query_strings  # noqa: E402
from .http1_errors import explain_http1_errors  # noqa: E402
from .http2 import answer_every_http2_stream  # noqa: E402
from .state import KEY  # noqa: E402

# So that curl's raw UTF-8 query strings are answered, not refused by h11.
accept_utf8_query_strings()
# So that what h11 cannot parse is answered with the reason, not an empty body.
explain_http1_errors()
# So that every HTTP/2 request the app takes is answered, and every other refused.
answer_every_http2_stream()
# So that a stop cancelling connections at graceful_timeout logs no traceback for each.
end_cancelled_connections_quietly()

app = create_app()
"""The app, configured from ``QUART_*`` environment variables."""


@app.before_serving
async def _prepare_process() -> None:
    check_stop_bounds(app.extensions[KEY].settings.login_log_drain_timeout)
    stop_gracefully_on_signals()
    refuse_waiting_logins_before_cancel(app.extensions[KEY].writer)


@app.after_serving
async def _finish() -> None:
    finish(app.extensions[KEY].writer.unconfirmed)
