"""Whether a process is still there, by its pid."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (one of another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
