"""The HTTP routes: ``/``, ``/login/``, the probes and ``/metrics``.

The probes follow Kubernetes: ``/livez`` says whether the process should be
restarted, ``/readyz`` whether it should get traffic, and ``/healthz`` gives
the readiness status with the writer's figures. With several workers each
answers for itself; ``/metrics`` is the fleet view.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, current_app, request
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge, RequestTimeout

from .inputs import BadLogin, needs_body, username_of
from .signals import send_login
from .state import KEY, login_log
from .writer import LogFull, LogUnavailable

LOGIN_PATH = "/login/"
LOGIN_METHODS = ("GET", "POST")

blueprint = Blueprint("login", __name__)


@blueprint.get("/")
async def index() -> str:
    """The bare route: the same stack doing no logging."""
    return "Hello World!"


# Quart would answer OPTIONS itself, 200 with an empty body: a 200 that logs nobody in.
@blueprint.route(LOGIN_PATH, methods=LOGIN_METHODS, provide_automatic_options=False)
async def login() -> str:
    """Take a login: read the username and send the ``login`` signal."""
    # The proxies resolved once each: every access through one costs a lookup.
    req = request._get_current_object()  # type: ignore[attr-defined]
    if req.method == "HEAD":  # werkzeug adds HEAD to every GET route; a HEAD logs nobody in
        raise MethodNotAllowed(LOGIN_METHODS)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    log = app.extensions[KEY]
    # A body still arriving when a stop refuses waiting logins is refused too (503).
    body = await log.writer.unless_refused(req.get_data(as_text=False)) if needs_body(req) else b""
    username = username_of(req, body, log.settings.username_max_length)
    await send_login(app, username)
    return "登录成功"


def not_ready_because() -> list[str]:
    """Why the app should get no traffic now; empty when it is ready."""
    log = login_log()
    writer, settings = log.writer, log.settings
    if writer.state != "running":
        return [f"the login log is {writer.state}"]
    reasons = []
    if not writer.alive:
        reasons.append("the writer task is not running")
    if writer.failing:
        reasons.append("writes are failing")
    if writer.oldest_age() > settings.login_log_stall_seconds:
        reasons.append(f"a record has waited over {settings.login_log_stall_seconds:g} s")
    if writer.pending > settings.login_log_high_water * writer.max_pending:
        reasons.append(f"over {settings.login_log_high_water:.0%} of the queue is full")
    return reasons


@blueprint.get("/livez")
async def livez() -> tuple[str, int]:
    """200 while the writer task is alive; no dependency is checked."""
    alive = login_log().writer.alive
    return ("ok", 200) if alive else ("the login log writer is not running", 503)


@blueprint.get("/readyz")
async def readyz() -> tuple[str, int]:
    """200 when the app should get traffic, else 503 and why."""
    reasons = not_ready_because()
    return ("; ".join(reasons), 503) if reasons else ("ok", 200)


@blueprint.get("/healthz")
async def healthz() -> tuple[dict[str, Any], int]:
    """The readiness status with the writer's figures, as JSON."""
    reasons = not_ready_because()
    body = {"status": "unavailable" if reasons else "ok", "reasons": reasons}
    return {**body, **login_log().writer.stats()}, 503 if reasons else 200


@blueprint.get("/metrics")
async def metrics() -> Response:
    """The Prometheus metrics, in the text format."""
    return Response(login_log().metrics.exposition(), content_type="text/plain; version=0.0.4")


def _refused(reason: str, body: str, status: int) -> Response:
    # Plain text: a reason may quote what the client sent.
    login_log().metrics.logins_refused.labels(reason).inc()
    return Response(body, status=status, content_type="text/plain; charset=utf-8")


@blueprint.app_errorhandler(BadLogin)
async def bad_login(error: BadLogin) -> Response:
    """A request that cannot be taken: its status and why."""
    reason = "unsupported_type" if error.status == 415 else "bad_request"
    return _refused(reason, error.message, error.status)


@blueprint.app_errorhandler(RequestEntityTooLarge)
async def too_large(error: RequestEntityTooLarge) -> Response:
    """A body over ``MAX_CONTENT_LENGTH``."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return _refused("too_large", f"the body is larger than {limit} bytes", 413)


@blueprint.app_errorhandler(MethodNotAllowed)
async def method_not_allowed(error: MethodNotAllowed) -> Response | MethodNotAllowed:
    """A method that logs nobody in (HEAD, OPTIONS, PUT, ...): 405 and the methods that do."""
    if request.path != LOGIN_PATH:
        return error  # not a login: Quart's own answer
    body = f"{request.method} does not log in: use {' or '.join(LOGIN_METHODS)}"
    response = _refused("method_not_allowed", body, 405)
    response.headers["Allow"] = ", ".join(LOGIN_METHODS)
    return response


@blueprint.app_errorhandler(RequestTimeout)
async def timeout(error: RequestTimeout) -> Response:
    """A body that did not all arrive within Quart's ``BODY_TIMEOUT``."""
    limit = current_app.config["BODY_TIMEOUT"]
    return _refused("timeout", f"the body did not arrive within {limit:g} s", 408)


@blueprint.app_errorhandler(LogUnavailable)
async def log_unavailable(error: LogUnavailable) -> Response:
    """The log could not confirm the record: 503. It may or may not be in the log."""
    reason = "log_full" if isinstance(error, LogFull) else "log_unavailable"
    body = f"登录失败, 请稍后再试 (login not confirmed: {error}; it may or may not be logged)"
    response = _refused(reason, body, 503)
    response.headers["Retry-After"] = "1"
    return response
