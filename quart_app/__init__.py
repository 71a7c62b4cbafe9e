"""quart_app: who logged in, from where and when, logged without slowing a Quart app.

In your own app::

    from quart_app import LoginAudit, login_signal

    audit = LoginAudit(app)
    ...
    await login_signal.send_async(app, username=name)  # in the route that logs in

Importing the package defines things only, and lazily: a served process can
prepare itself (:mod:`quart_app.serving`) before ``prometheus_client`` is
imported. :func:`create_app` builds the project's own app; hypercorn serves
:mod:`quart_app.asgi`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .config import ConfigError
    from .extension import LoginAudit
    from .inputs import BadUsername
    from .signals import OutsideRequest, login_signal
    from .writer import LogUnavailable

_WHERE = {
    "LoginAudit": ".extension",
    "login_signal": ".signals",
    "LogUnavailable": ".writer",
    "BadUsername": ".inputs",
    "OutsideRequest": ".signals",
    "ConfigError": ".config",
    "create_app": ".app",
}

__all__ = [
    "BadUsername",
    "ConfigError",
    "LogUnavailable",
    "LoginAudit",
    "OutsideRequest",
    "create_app",
    "login_signal",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
