"""``LoginAudit``: the login audit trail as a Quart extension, as ``QuartAuth(app)`` is one.

``init_app`` reads the ``LOGIN_LOG_*`` settings from ``app.config`` and wires
store -> writer -> audit receiver for that app: its logins, sent with
``await login_signal.send_async(app, username=...)`` from the request that logs
in, become lines (or rows). The writer starts and drains with the app
(``before_serving`` / ``after_serving``); a login the log cannot confirm raises
:class:`~quart_app.writer.LogUnavailable`, answered 503 by a handler the app
may replace.
"""

from __future__ import annotations

from quart import Quart, Response, current_app

from .config import Settings
from .inputs import BadLogin
from .metrics import Metrics
from .proxy import ForwardedClientMiddleware
from .receiver import connect_audit_receiver
from .signals import OUTSIDE_REQUEST, OutsideRequest, login_signal
from .state import KEY, LoginLog, login_log
from .stores import StoreFactory, store_from_settings
from .writer import LogFull, LogUnavailable, LogWriter

NOT_CONFIRMED = "登录失败, 请稍后再试 (login not confirmed: {}; it may or may not be logged)"


class LoginAudit:
    """Records who logged in to an app, from where and when.

    ``LoginAudit(app)``, or ``audit = LoginAudit()`` then ``audit.init_app(app)``
    in an app factory; one instance may serve several apps, each with its own
    writer and store, each logging only its own logins. ``store_factory``
    chooses where records are kept (by default a PostgreSQL table when
    ``LOGIN_LOG_DATABASE_URL`` is set, else the file ``LOGIN_LOG_PATH``).
    """

    def __init__(self, app: Quart | None = None, *, store_factory: StoreFactory | None = None):
        self.store_factory = store_factory or store_from_settings
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Quart) -> None:
        """Set the audit up for ``app``.

        Raises :class:`~quart_app.config.ConfigError` naming the key of an
        invalid ``LOGIN_LOG_*`` value; a store that cannot be opened makes the
        app refuse to start serving.
        """
        if KEY in app.extensions:
            raise RuntimeError(f"LoginAudit is already set up for the app {app.name!r}")
        settings = Settings.from_config(app.config, quart_keys=False)
        metrics = Metrics(app.name)
        writer = LogWriter(
            self.store_factory(settings),
            max_pending=settings.login_log_max_pending,
            full_timeout=settings.login_log_full_timeout,
            durable=settings.login_log_durable,
            drain_timeout=settings.login_log_drain_timeout,
            logger=app.logger,
            metrics=metrics,
        )
        app.extensions[KEY] = LoginLog(settings, writer, metrics)
        connect_audit_receiver(app, writer)
        # Hooks, not a while_serving generator: one is made once at registration,
        # and an app may be served more than once (tests do), one serve after another.
        app.before_serving(writer.start)
        app.after_serving(writer.stop)
        # The app's own handlers, registered before, are kept.
        own = app.error_handler_spec.get(None, {}).get(None, {})
        for error, handler in ((LogUnavailable, log_unavailable), (BadLogin, bad_login)):
            if error not in own:
                app.register_error_handler(error, handler)
        if settings.proxy_trusted_hops:
            app.asgi_app = ForwardedClientMiddleware(  # type: ignore[method-assign]
                app.asgi_app, mode=settings.proxy_mode, trusted_hops=settings.proxy_trusted_hops
            )

    async def log_login(self, username: str) -> None:
        """Record a login of ``username`` by the current request of the current app.

        The same as ``await login_signal.send_async(current_app, username=username)``:
        raises :class:`~quart_app.inputs.BadUsername` for a username that cannot
        be logged and :class:`~quart_app.writer.LogUnavailable` when the log
        cannot confirm the record, and :class:`~quart_app.OutsideRequest` outside a request.
        """
        try:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        except RuntimeError:
            raise OutsideRequest(OUTSIDE_REQUEST) from None
        if KEY not in app.extensions:
            raise RuntimeError(f"LoginAudit is not set up for the app {app.name!r}")
        await login_signal.send_async(app, username=username)


def refused(reason: str, body: str, status: int) -> Response:
    """A plain-text refusal, counted under ``reason`` in ``quart_app_logins_refused_total``."""
    login_log().metrics.logins_refused.labels(reason).inc()
    # Plain text: a reason may quote what the client sent.
    return Response(body, status=status, content_type="text/plain; charset=utf-8")


async def log_unavailable(error: LogUnavailable) -> Response:
    """The log could not confirm the record: 503 and ``Retry-After: 1``; it may be logged."""
    reason = "log_full" if isinstance(error, LogFull) else "log_unavailable"
    response = refused(reason, NOT_CONFIRMED.format(error), 503)
    response.headers["Retry-After"] = "1"
    return response


async def bad_login(error: BadLogin) -> Response:
    """A login that cannot be taken (a refused username, a body that cannot be read): 4xx, why."""
    reason = "unsupported_type" if error.status == 415 else "bad_request"
    return refused(reason, error.message, error.status)
