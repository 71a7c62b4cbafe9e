"""A load generator for quart_app that can check every acknowledged login was logged once.

In-process use (tests and the benchmark)::

    summary = await run_load(LoadConfig("http://127.0.0.1:8000", requests=1000))
    result = await verify_log("login_log.txt", summary.logins())
    assert result.ok, result.to_dict()

``LoadConfig(url, names=[...])`` sends exactly those usernames, and
``summary.logins(every_line=True)`` then claims every line of a log the run
owns; ``LoadConfig(url, duration=5, rate=300)`` is an open-loop run.
``verify_log`` reads a path or any :class:`LoginSource`.

From the shell: ``quart-app-loadtest URL ...`` or ``python -m quart_app.tools.loadtest URL ...``
(``--help`` lists the options).
"""

from .cli import main
from .config import LoadConfig
from .loop import loop_factory, run_uvloop
from .runner import run_load
from .sources import LogFile, Logged, LoginSource, open_source
from .stats import SecondStats
from .summary import Summary
from .verify import Logins, Tally, VerifyResult, first_logged, verify_log

__all__ = [
    "LoadConfig",
    "LogFile",
    "Logged",
    "LoginSource",
    "Logins",
    "SecondStats",
    "Summary",
    "Tally",
    "VerifyResult",
    "first_logged",
    "loop_factory",
    "main",
    "open_source",
    "run_load",
    "run_uvloop",
    "verify_log",
]
