"""The spool: a local directory where records wait while the database is away.

:mod:`.store` puts it around the PostgreSQL store, :mod:`.forwarder` empties it
into the table, :mod:`.frames` is its record format and :mod:`.directory` its
files (see docs/spool.md).
"""

from __future__ import annotations

from .directory import SpoolDirError
from .store import SpoolFull, SpoolStore

__all__ = ["SpoolDirError", "SpoolFull", "SpoolStore"]
