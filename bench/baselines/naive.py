"""Baseline "naive": the receiver opens, appends and closes the file before the response.

``hypercorn --config hypercorn.toml bench.baselines.naive:app`` (from the repository root).
Each login costs three trips to aiofiles' thread pool (open, write, close), all
awaited while the client waits: the obvious async port of the Flask original.
"""

from __future__ import annotations

import aiofiles
from quart import Quart

from ._common import create_app


async def append_now(app: Quart, path: str, line: bytes) -> None:
    """Append ``line`` to ``path`` in its own open/write/close, before returning."""
    async with aiofiles.open(path, "ab") as file:
        await file.write(line)


app = create_app(__name__, append_now)
