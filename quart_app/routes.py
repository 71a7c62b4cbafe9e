"""The seed's routes: ``/`` and ``/login/``, which sends the ``login`` signal."""

from __future__ import annotations

from quart import Blueprint, Response, current_app, request
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge, RequestTimeout

from .extension import refused
from .inputs import needs_body, username_of
from .signals import login_signal
from .state import KEY, needs_login_audit

LOGIN_PATH = "/login/"
LOGIN_METHODS = ("GET", "POST")

blueprint = Blueprint("login", __name__)
needs_login_audit(blueprint, "the login routes")


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
    if needs_body(req):
        # A body still arriving when a stop refuses waiting logins is refused too (503).
        body = await app.extensions[KEY].writer.unless_refused(req.get_data(as_text=False))
    else:
        body = b""
    await login_signal.send_async(app, username=username_of(req, body))
    return "登录成功"


@blueprint.app_errorhandler(RequestEntityTooLarge)
async def too_large(error: RequestEntityTooLarge) -> Response:
    """A body over ``MAX_CONTENT_LENGTH``."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return refused("too_large", f"the body is larger than {limit} bytes", 413)


@blueprint.app_errorhandler(MethodNotAllowed)
async def method_not_allowed(error: MethodNotAllowed) -> Response | MethodNotAllowed:
    """A method that logs nobody in (HEAD, OPTIONS, PUT, ...): 405 and the methods that do."""
    if request.path != LOGIN_PATH:
        return error  # not a login: Quart's own answer
    body = f"{request.method} does not log in: use {' or '.join(LOGIN_METHODS)}"
    response = refused("method_not_allowed", body, 405)
    response.headers["Allow"] = ", ".join(LOGIN_METHODS)
    return response


@blueprint.app_errorhandler(RequestTimeout)
async def timeout(error: RequestTimeout) -> Response:
    """A body that did not all arrive within Quart's ``BODY_TIMEOUT``."""
    limit = current_app.config["BODY_TIMEOUT"]
    return refused("timeout", f"the body did not arrive within {limit:g} s", 408)
