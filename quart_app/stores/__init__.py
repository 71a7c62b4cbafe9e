"""Where records are kept: the protocol every store follows, and the stores by name.

The writer hands a store batches of :class:`~quart_app.records.LoginRecord` and
knows nothing else about it, so keeping records somewhere new means a new store
(one module, and one line in :mod:`.registry`), not a new writer, route, signal
or receiver. A store that adds to another (a spool) wraps it: :class:`WrappingStore`.
"""

from __future__ import annotations

from .base import RecordStore, WrappingStore
from .registry import StoreFactory, StoreRegistry, StoreWrapper, store_from_settings

__all__ = [
    "RecordStore",
    "StoreFactory",
    "StoreRegistry",
    "StoreWrapper",
    "WrappingStore",
    "store_from_settings",
]
