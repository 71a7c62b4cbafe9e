"""``quart-app-log``: search, count, chart and purge the login trail, from files or the table.

* :mod:`.cli`: the command line, its exit statuses, each subcommand;
* :mod:`.sources`: log files in order, or one ``postgresql://`` table;
* :mod:`.when`: the times asked about (ISO 8601, or ``7d`` back from now);
* :mod:`.output`: records as text, JSON Lines or spreadsheet-safe CSV;
* :mod:`.stats`: the figures of ``stats`` and its chart.

The reading itself is :mod:`quart_app.trail`'s, shared with the load tool.
"""

from .cli import main

__all__ = ["main"]
