"""The application factory: config, writer, receiver and routes wired together."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from quart import Quart

from .config import DEFAULTS, Settings, load_settings
from .guard import RequestGuard
from .proxy import ForwardedClientMiddleware
from .receiver import connect_audit_receiver
from .records import FORMATTERS
from .routes import blueprint
from .store import FileStore, RecordStore
from .workers import forward_sigterm_to_parent
from .writer import LogWriter

StoreFactory = Callable[[Settings], RecordStore]


def _file_store(settings: Settings) -> RecordStore:
    return FileStore(settings.log_path)


def create_app(
    config: Mapping[str, Any] | None = None, *, store_factory: StoreFactory = _file_store
) -> Quart:
    """Build the app: defaults, then ``QUART_*`` environment variables, then ``config``.

    ``store_factory`` chooses where records are kept (a file by default).
    Raises :class:`~quart_app.config.ConfigError` for a value that cannot work;
    an unwritable log path makes the app refuse to start serving.
    """
    app = Quart(__name__)
    app.config.update(DEFAULTS)
    app.config.from_prefixed_env()
    app.config.update(config or {})
    settings = load_settings(app.config)
    app.config.update(
        USERNAME_MAX_LENGTH=settings.username_max_length,
        LOGIN_LOG_DURABLE=settings.durable,
    )

    writer = LogWriter(
        store_factory(settings),
        max_pending=settings.max_pending,
        full_timeout=settings.full_timeout,
        durable=settings.durable,
        logger=app.logger,
    )
    app.extensions["login_log"] = writer
    connect_audit_receiver(app, writer, FORMATTERS[settings.log_format])
    app.register_blueprint(blueprint)

    @app.while_serving
    async def run_writer() -> AsyncGenerator[None, None]:
        forward_sigterm_to_parent()
        await writer.start()
        yield
        await writer.stop()

    if settings.proxy_trusted_hops:
        app.asgi_app = ForwardedClientMiddleware(  # type: ignore[method-assign]
            app.asgi_app, mode=settings.proxy_mode, trusted_hops=settings.proxy_trusted_hops
        )
    # Outermost, so that what Quart cannot decode never reaches it (nor the test client's app).
    app.asgi_app = RequestGuard(app.asgi_app)  # type: ignore[method-assign]
    return app
