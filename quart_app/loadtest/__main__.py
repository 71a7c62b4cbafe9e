"""``python -m quart_app.loadtest``: the same as the ``quart-app-loadtest`` command."""

from .cli import main

raise SystemExit(main())
