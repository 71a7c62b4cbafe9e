"""The stores by name, and the wrappers put around the store chosen.

A store is a module with a factory, ``from_settings(settings) -> store``, and
one line here naming it: ``REGISTRY.register_store("file",
"quart_app.stores.file:from_settings")``. A factory named so is imported only
when its store is made, so that a store's dependencies (asyncpg) are loaded
only where it is used. A wrapper (a spool around the PostgreSQL store, say) is
registered with the setting that turns it on.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Settings
from .base import RecordStore

StoreFactory = Callable[[Settings], RecordStore]
"""Makes a store from the settings."""

StoreWrapper = Callable[[RecordStore, Settings], RecordStore]
"""Puts a store around another (``inner``, ``settings``): usually a :class:`.WrappingStore`."""


@dataclass(frozen=True, slots=True)
class _Wrapper:
    name: str
    wrap: StoreWrapper | str
    when: Callable[[Settings], bool]


class StoreRegistry:
    """Store factories by name, and the wrappers put around the store made.

    A factory or wrapper is given as a callable, or as ``"module:name"``,
    imported when first needed.
    """

    def __init__(self) -> None:
        self._stores: dict[str, StoreFactory | str] = {}
        self._wrappers: list[_Wrapper] = []

    def register_store(self, name: str, factory: StoreFactory | str) -> None:
        """Make the store ``name`` with ``factory``; a name is registered once."""
        if name in self._stores:
            raise ValueError(f"a store named {name!r} is registered already")
        self._stores[name] = factory

    def register_wrapper(
        self, name: str, wrap: StoreWrapper | str, *, when: Callable[[Settings], bool]
    ) -> None:
        """Put ``wrap``'s store around the store made whenever ``when(settings)`` is true.

        ``when`` is asked first, so a wrapper turned off is never imported.
        Wrappers go around the store in the order they are registered: the
        first registered is the innermost.
        """
        if any(wrapper.name == name for wrapper in self._wrappers):
            raise ValueError(f"a wrapper named {name!r} is registered already")
        self._wrappers.append(_Wrapper(name, wrap, when))

    def create(self, name: str, settings: Settings) -> RecordStore:
        """The store ``name`` for ``settings``, inside the wrappers turned on."""
        try:
            factory = self._stores[name]
        except KeyError:
            known = ", ".join(sorted(self._stores)) or "none"
            raise ValueError(f"no store is named {name!r} (registered: {known})") from None
        store = _load(factory)(settings)
        for wrapper in self._wrappers:
            if wrapper.when(settings):
                store = _load(wrapper.wrap)(store, settings)
        return store

    def store_for(self, settings: Settings) -> RecordStore:
        """The store :func:`store_name` picks for ``settings``, inside the wrappers turned on."""
        return self.create(store_name(settings), settings)


def _load(target: Callable[..., RecordStore] | str) -> Callable[..., RecordStore]:
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    loaded: Callable[..., RecordStore] = getattr(importlib.import_module(module), name)
    return loaded


def store_name(settings: Settings) -> str:
    """``"postgresql"`` when ``LOGIN_LOG_DATABASE_URL`` is set, else ``"file"``."""
    return "postgresql" if settings.login_log_database_url else "file"


REGISTRY = StoreRegistry()
"""The stores and wrappers :func:`store_from_settings` chooses from."""
REGISTRY.register_store("file", "quart_app.stores.file:from_settings")
REGISTRY.register_store("postgresql", "quart_app.stores.postgres:from_settings")
REGISTRY.register_wrapper(
    "spool",
    "quart_app.spool.store:from_settings",
    when=lambda settings: bool(settings.login_log_spool_dir),
)
REGISTRY.register_wrapper(
    "seal",
    "quart_app.seal.store:from_settings",
    when=lambda settings: bool(settings.login_log_seal_key),
)


def store_from_settings(settings: Settings) -> RecordStore:
    """The app's store: the PostgreSQL table when ``LOGIN_LOG_DATABASE_URL`` is set, else
    the file, inside the wrappers registered in :data:`REGISTRY` that ``settings`` turn on."""
    return REGISTRY.store_for(settings)
