"""A graceful stop for hypercorn's worker processes, whichever process gets SIGTERM.

hypercorn's parent process turns SIGTERM into a graceful stop of its workers,
but a worker process itself keeps the default action and dies at once, taking
queued records with it. That happens when the signal goes to every process of
the server, as systemd, Kubernetes or ``kill -- -PGID`` send it. hypercorn
offers no hook for this, hence this module.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys


def forward_sigterm_to_parent() -> None:
    """In a hypercorn worker process, pass SIGTERM on to the parent process.

    The parent then stops every worker gracefully, and this one drains its
    writer like the rest. Does nothing outside a hypercorn worker process.
    """
    parent = multiprocessing.parent_process()
    if parent is None or "hypercorn" not in sys.modules or parent.pid is None:
        return
    parent_pid = parent.pid

    def forward() -> None:
        if os.getppid() == parent_pid:
            os.kill(parent_pid, signal.SIGTERM)
        else:  # orphaned: nobody left to coordinate, stop as before
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, forward)
