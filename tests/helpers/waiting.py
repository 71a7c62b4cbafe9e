"""Waiting for something to happen, with a deadline that names what never did."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest


async def until(condition: Callable[[], object], what: str, timeout: float = 10) -> None:
    """Wait until ``condition()`` is true; fail the test, naming ``what``, after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.01)
