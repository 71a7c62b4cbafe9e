"""hypercorn's connection task, made to end quietly when a stop cancels it.

At ``graceful_timeout`` hypercorn cancels the connections still open (a client
that never takes its answer, one still sending a body). Each runs in the task
``asyncio.start_server`` made for it, whose done-callback in CPython 3.11 calls
``task.exception()`` on the cancelled task, which raises: ``Exception in
callback ... CancelledError`` and a traceback per connection in the operator's
log, for a stop that went as it should (CPython 3.12 checks ``cancelled()``
first). Here a cancelled connection, closed by hypercorn on its way out, ends
its task without the exception.

hypercorn has no hook for this, hence a subclass of its ``TCPServer``, put in
its place in ``hypercorn.asyncio.run``, which builds one per connection:
tests/test_hypercorn_pins.py fails when the hypercorn code it relies on
changes.
"""

from __future__ import annotations

import asyncio
import contextlib

import hypercorn.asyncio.run as run
from hypercorn.asyncio.tcp_server import TCPServer


class QuietlyCancelledTCPServer(TCPServer):
    """hypercorn's connection, whose task ends without an exception when cancelled."""

    async def run(self) -> None:
        """Serve the connection, as hypercorn does, until it closes or a stop cancels it."""
        # hypercorn's run() closes the connection in its finally clause; the
        # task cancelled is this connection's own, which nothing else awaits.
        with contextlib.suppress(asyncio.CancelledError):
            await super().run()


def end_cancelled_connections_quietly() -> None:
    """Make hypercorn serve each TCP connection with :class:`QuietlyCancelledTCPServer`."""
    run.TCPServer = QuietlyCancelledTCPServer  # type: ignore[misc]
