"""The application factory: settings -> store -> writer -> receiver -> routes."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from quart import Quart

from .config import Settings, defaults, from_environment
from .guard import RequestGuard
from .metrics import Metrics
from .proxy import ForwardedClientMiddleware
from .receiver import connect_audit_receiver
from .records import FORMATTERS
from .routes import LOGIN_PATH, blueprint
from .state import KEY, LoginLog
from .stores import RecordStore
from .stores.file import FileStore
from .writer import LogWriter

StoreFactory = Callable[[Settings], RecordStore]


def file_store(settings: Settings) -> RecordStore:
    """The file at ``LOGIN_LOG_PATH``."""
    return FileStore(
        settings.login_log_path,
        formatter=FORMATTERS[settings.login_log_format],
        mode=settings.login_log_file_mode,
        durable=settings.login_log_durable,
    )


def postgres_store(settings: Settings) -> RecordStore:
    """The table ``LOGIN_LOG_TABLE`` of the database at ``LOGIN_LOG_DATABASE_URL``."""
    from .stores.postgres import PostgresStore  # asyncpg is loaded only when used

    return PostgresStore(
        settings.login_log_database_url,
        table=settings.login_log_table,
        host=settings.login_log_host,
        timeout=settings.login_log_database_timeout,
    )


def default_store(settings: Settings) -> RecordStore:
    """PostgreSQL when ``LOGIN_LOG_DATABASE_URL`` is set, else the file."""
    return postgres_store(settings) if settings.login_log_database_url else file_store(settings)


def create_app(
    config: Mapping[str, Any] | None = None, *, store_factory: StoreFactory = default_store
) -> Quart:
    """Build the app: defaults, then ``QUART_*`` environment variables, then ``config``.

    ``store_factory`` chooses where records are kept (by default a PostgreSQL
    table when ``LOGIN_LOG_DATABASE_URL`` is set, else the file).
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

    metrics = Metrics(app.name)  # the label that keeps apps apart in one process or directory
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
