"""Baseline "background": the receiver hands each line to ``app.add_background_task``.

``hypercorn --config hypercorn.toml bench.baselines.background:app`` (from the repository root).
The response no longer waits for the file, but every login still costs a task
and an aiofiles open/write/close, and nothing bounds how many pile up.
"""

from __future__ import annotations

import aiofiles
from quart import Quart

from ._common import create_app


async def _append(path: str, line: bytes) -> None:
    async with aiofiles.open(path, "ab") as file:
        await file.write(line)


async def append_later(app: Quart, path: str, line: bytes) -> None:
    """Schedule one aiofiles append of ``line``; return without waiting for it."""
    app.add_background_task(_append, path, line)


app = create_app(__name__, append_later)
