"""Client CPU per request of aiohttp and httpx, the reason the load-test tool uses aiohttp.

Needs httpx, which the project does not (``.venv/bin/pip install httpx``)::

    .venv/bin/python bench/client_overhead.py http://127.0.0.1:8000/

Each client sends the same GETs over the same number of pooled connections, on
uvloop, alternating for a few rounds; the median CPU time per request of this
process is printed for each.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import httpx
import uvloop


async def _aiohttp(url: str, requests: int, connections: int) -> None:
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(count: int) -> None:
            for _ in range(count):
                async with session.get(url) as response:
                    await response.read()

        await asyncio.gather(*(worker(requests // connections) for _ in range(connections)))


async def _httpx(url: str, requests: int, connections: int) -> None:
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits) as client:

        async def worker(count: int) -> None:
            for _ in range(count):
                response = await client.get(url)
                await response.aread()

        await asyncio.gather(*(worker(requests // connections) for _ in range(connections)))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    """Print each client's median CPU microseconds per request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    clients: dict[str, Callable[[str, int, int], Coroutine[Any, Any, None]]] = {
        "aiohttp": _aiohttp,
        "httpx": _httpx,
    }
    costs: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(args.rounds):
        for name, client in clients.items():
            before = _cpu_seconds()
            uvloop.run(client(args.url, args.requests, args.connections))
            costs[name].append((_cpu_seconds() - before) / args.requests * 1e6)
    for name, values in costs.items():
        print(f"{name:8} {statistics.median(values):8,.0f} us CPU per request (median)")


if __name__ == "__main__":
    main()
