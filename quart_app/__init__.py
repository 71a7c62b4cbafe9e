"""quart_app: who logged in, from where and when, logged without slowing a Quart app.

Importing the package does nothing but define things: :func:`create_app` builds
an app; hypercorn serves :mod:`quart_app.asgi`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazily, so that importing quart_app.asgi can set PROMETHEUS_MULTIPROC_DIR
    # before the app's modules import prometheus_client.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
