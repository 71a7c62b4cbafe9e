"""``python -m quart_app.tools.loadtest``: the same as the ``quart-app-loadtest`` command."""

from .cli import main

raise SystemExit(main())
