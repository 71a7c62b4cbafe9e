"""A load generator for quart_app that can check every acknowledged login was logged once.

In-process use (the benchmark does this)::

    summary = await run_load(LoadConfig("http://127.0.0.1:8000", requests=1000))
    result = await verify_log("login_log.txt", summary.acknowledged, run_prefix=summary.stem)

From the shell: ``quart-app-loadtest URL ...`` or ``python -m quart_app.loadtest URL ...``
(``--help`` lists the options).
"""

from .cli import main
from .runner import LoadConfig, Summary, run_load
from .stats import SecondStats
from .verify import VerifyResult, verify_log

__all__ = [
    "LoadConfig",
    "SecondStats",
    "Summary",
    "VerifyResult",
    "main",
    "run_load",
    "verify_log",
]
