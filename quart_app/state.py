"""What the routes need of their app, kept in ``app.extensions``."""

from __future__ import annotations

from dataclasses import dataclass

from quart import current_app

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
