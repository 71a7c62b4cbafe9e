"""The application factory: settings -> store -> writer -> receiver -> routes."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from quart import Quart

from .config import Settings, defaults, from_environment
from .guard import RequestGuard
from .metrics import Metrics
from .proxy import ForwardedClientMiddleware
from .receiver import connect_audit_receiver
from .routes import LOGIN_PATH, blueprint
from .state import KEY, LoginLog
from .stores import StoreFactory, store_from_settings
from .writer import LogWriter


def create_app(
    config: Mapping[str, Any] | None = None, *, store_factory: StoreFactory = store_from_settings
) -> Quart:
    """Build the app: defaults, then ``QUART_*`` environment variables, then ``config``.

    ``store_factory`` chooses where records are kept (by default
    :func:`~quart_app.stores.store_from_settings`: a PostgreSQL table when
    ``LOGIN_LOG_DATABASE_URL`` is set, else the file).
    Raises :class:`~quart_app.config.ConfigError` for a value that cannot work;
    a store that cannot be opened makes the app refuse to start serving.
    """
    app = Quart(__name__)
    app.config.update(defaults())
    app.config.from_prefixed_env()  # Quart's own keys, parsed as JSON
    app.config.update(from_environment(os.environ))  # ours, as given
    app.config.update(config or {})
    settings = Settings.from_config(app.config)
    # Quart reads this key itself: it must hold the checked value.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length

    metrics = Metrics()
    writer = LogWriter(
        store_factory(settings),
        max_pending=settings.login_log_max_pending,
        full_timeout=settings.login_log_full_timeout,
        durable=settings.login_log_durable,
        drain_timeout=settings.login_log_drain_timeout,
        logger=app.logger,
        metrics=metrics,
    )
    app.extensions[KEY] = LoginLog(settings, writer, metrics)
    connect_audit_receiver(app, writer)
    app.register_blueprint(blueprint)

    @app.while_serving
    async def run_writer() -> AsyncGenerator[None, None]:
        await writer.start()
        yield
        await writer.stop()

    if settings.proxy_trusted_hops:
        app.asgi_app = ForwardedClientMiddleware(  # type: ignore[method-assign]
            app.asgi_app, mode=settings.proxy_mode, trusted_hops=settings.proxy_trusted_hops
        )
    # Outermost, so that what Quart cannot decode never reaches it (nor the test client's app).
    app.asgi_app = RequestGuard(app.asgi_app, metrics, LOGIN_PATH)  # type: ignore[method-assign]
    return app
