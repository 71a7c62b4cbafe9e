"""quart_app: who logged in, from where and when, logged without slowing a Quart app."""

from .app import create_app
from .http1 import accept_utf8_query_strings

__all__ = ["app", "create_app"]

# So that hypercorn serving quart_app:app answers curl's raw UTF-8 query strings.
accept_utf8_query_strings()

app = create_app()
"""The app hypercorn serves as ``quart_app:app``, configured from ``QUART_*`` variables."""
