"""Where the trail is: a ``postgresql://`` URL, or a log file's path."""

from __future__ import annotations

import re

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
DATABASE_SCHEMES = ("postgresql", "postgres")
"""The schemes libpq (and asyncpg) take, in any case as they do."""


def url_scheme(where: str) -> str | None:
    """The scheme of ``where`` if it reads as a URL (``SCHEME://...``), else ``None``.

    Only the scheme: the rest may hold a password, and the scheme's characters cannot.
    """
    match = _SCHEME.match(where)
    return match[1] if match else None


def is_database_url(where: object) -> bool:
    """Whether ``where`` is a PostgreSQL URL rather than a file's path."""
    return isinstance(where, str) and (url_scheme(where) or "").lower() in DATABASE_SCHEMES
