"""The project's own app: exactly what a user would write, Quart + LoginAudit + blueprints."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from quart import Quart

from . import probes, routes
from .config import Settings, defaults, from_environment
from .extension import LoginAudit, StoreFactory
from .guard import RequestGuard
from .state import KEY


def create_app(
    config: Mapping[str, Any] | None = None, *, store_factory: StoreFactory | None = None
) -> Quart:
    """Build the app: defaults, then ``QUART_*`` environment variables, then ``config``.

    The seed's routes (``/``, ``/login/``) and the probes (``/livez``,
    ``/readyz``, ``/healthz``, ``/metrics``) on a :class:`LoginAudit`.
    ``store_factory`` chooses where records are kept, as for :class:`LoginAudit`.
    Raises :class:`~quart_app.config.ConfigError` for a value that cannot work;
    a store that cannot be opened makes the app refuse to start serving.
    """
    app = Quart(__name__)
    app.config.update(defaults())
    app.config.from_prefixed_env()  # Quart's own keys, parsed as JSON
    # Ours, as given: JSON would turn QUART_LOGIN_LOG_FILE_MODE=0640 into an error.
    app.config.update(from_environment(os.environ))
    app.config.update(config or {})
    # Quart reads this key itself: it must hold the checked value.
    checked = Settings.from_config(app.config)
    app.config["MAX_CONTENT_LENGTH"] = checked.max_content_length
    LoginAudit(app, store_factory=store_factory)
    log = app.extensions[KEY]
    app.register_blueprint(routes.blueprint)
    app.register_blueprint(probes.blueprint)
    # Outermost, so that what Quart cannot decode never reaches it (nor the test client's app).
    app.asgi_app = RequestGuard(  # type: ignore[method-assign]
        app.asgi_app, log.metrics, routes.LOGIN_PATH
    )
    return app
