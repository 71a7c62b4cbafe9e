"""What hypercorn serves: ``hypercorn --config hypercorn.toml quart_app.asgi:app``.

Importing this module builds the app from ``QUART_*`` settings and prepares
the process for serving (:func:`quart_app.serving.prepare_for_hypercorn`);
import :func:`quart_app.create_app` instead to build an app without touching
the process.
"""

from __future__ import annotations

from .serving import prepare_for_hypercorn, use_shared_metrics_directory

# Before anything imports prometheus_client, which reads it once.
use_shared_metrics_directory()

from .app import create_app  # noqa: E402

app = create_app()
"""The app, configured from ``QUART_*`` environment variables."""
prepare_for_hypercorn(app)
