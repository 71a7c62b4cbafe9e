"""Where records are kept: the protocol every store follows.

The writer hands a store batches of :class:`~quart_app.records.LoginRecord` and
knows nothing else about it, so keeping records somewhere new means a new store,
not a new writer, route, signal or receiver. A store that adds to another (a
spool) wraps it: :class:`WrappingStore`.
"""

from __future__ import annotations

from .base import RecordStore, WrappingStore

__all__ = ["RecordStore", "WrappingStore"]
