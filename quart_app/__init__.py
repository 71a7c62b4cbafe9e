"""quart_app: who logged in, from where and when, logged without slowing a Quart app."""

from .app import create_app

__all__ = ["app", "create_app"]

app = create_app()
"""The app hypercorn serves as ``quart_app:app``, configured from ``QUART_*`` variables."""
