"""What the routes need of their app, kept in ``app.extensions``."""

from __future__ import annotations

from dataclasses import dataclass

from quart import Blueprint, current_app
from quart.blueprints import BlueprintSetupState

from .config import Settings
from .metrics import Metrics
from .writer import LogWriter

KEY = "login_log"


@dataclass(frozen=True, slots=True)
class LoginLog:
    """An app's settings, writer and metrics."""

    settings: Settings
    writer: LogWriter
    metrics: Metrics


def login_log() -> LoginLog:
    """The current app's :class:`LoginLog`."""
    return current_app.extensions[KEY]


def needs_login_audit(blueprint: Blueprint, what: str) -> None:
    """Make an app that registers ``blueprint`` without LoginAudit refuse to start, saying why.

    Checked when serving starts, not at registration: LoginAudit may be set up
    after the blueprint is registered.
    """

    @blueprint.record_once
    def check_at_start(state: BlueprintSetupState) -> None:
        app = state.app

        @app.before_serving
        async def check() -> None:
            if KEY not in app.extensions:
                raise RuntimeError(
                    f"{what} need LoginAudit: set it up for the app {app.name!r} "
                    "(LoginAudit(app)) before serving"
                )
