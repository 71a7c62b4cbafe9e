"""The HTTP routes: ``/``, ``/login/`` and ``/healthz``."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, current_app, request

from .inputs import BadLogin, read_username
from .signals import send_login
from .writer import LogUnavailable, LogWriter

blueprint = Blueprint("login", __name__)


def _writer() -> LogWriter:
    return current_app.extensions["login_log"]


@blueprint.get("/")
async def index() -> str:
    """The bare route: the same stack doing no logging."""
    return "Hello World!"


@blueprint.route("/login/", methods=["GET", "POST"])
async def login() -> str:
    """Take a login: read the username and send the ``login`` signal."""
    username = await read_username(request, current_app.config["USERNAME_MAX_LENGTH"])
    await send_login(current_app._get_current_object(), username)  # type: ignore[attr-defined]
    return "登录成功"


@blueprint.get("/healthz")
async def healthz() -> tuple[dict[str, Any], int]:
    """The writer's figures; 503 while writes fail or the writer is not running."""
    writer = _writer()
    healthy = writer.running and not writer.failing
    return {"status": "ok" if healthy else "degraded", **writer.stats()}, 200 if healthy else 503


@blueprint.app_errorhandler(BadLogin)
async def bad_login(error: BadLogin) -> tuple[str, int]:
    """A request that cannot be taken: its status and why."""
    return error.message, error.status


@blueprint.app_errorhandler(LogUnavailable)
async def log_unavailable(error: LogUnavailable) -> tuple[str, int, dict[str, str]]:
    """The log could not take the record: the login is refused, not lost."""
    return f"登录失败, 请稍后再试 (login not recorded: {error})", 503, {"Retry-After": "1"}
