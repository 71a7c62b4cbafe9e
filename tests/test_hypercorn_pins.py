"""The hypercorn code quart_app's http1_errors, http2, connections and serving rely on, pinned.

The first three put a subclass of a hypercorn class in its place and rely on
that class's private members; serving reads worker_serve's locals. A
hypercorn whose code differs fails here: check these modules against it (does
the bug they work around remain? do the members they use still mean the
same?), then pin its code.
"""

from __future__ import annotations

import hashlib
import inspect

import hypercorn.asyncio.run
import hypercorn.asyncio.tcp_server
import hypercorn.protocol
import hypercorn.protocol.h2
import hypercorn.protocol.h11
import hypercorn.protocol.http_stream
import pytest

PINNED = {
    # Builds each connection's protocol from the names replaced.
    hypercorn.protocol.ProtocolWrapper: (
        "caf949187e9b4a816ad4a5f0229773ec01190a6051f6205807de599870c16c17"
    ),
    hypercorn.protocol.h2.H2Protocol: (
        "7257f8bafccaa2e5677c63696eef2777854fd65f2721f3408c6c963398a15145"
    ),
    # Ends its answer (EndBody) before it says it is done (StreamClosed).
    hypercorn.protocol.http_stream.HTTPStream: (
        "e0f656feb55ab89c407631368d7a00f3e1b9ab4eb5ade4a639771150bbc6cfa5"
    ),
    hypercorn.protocol.h11.H11Protocol: (
        "b32a61e0a8ca2127c7e1cb133281521f6cc73fdefb94b188fb6944e80b175b43"
    ),
    # Its close() wakes a stream waiting in drain().
    hypercorn.protocol.h2.StreamBuffer: (
        "bc347b7c78068613befe675f8fb3779ff3a4385312aa46c031e335b33d281be9"
    ),
    # Restarts the idle timer on Updated(idle=True), closes on Closed(); its
    # run() closes the connection in a finally clause, cancelled or not.
    hypercorn.asyncio.tcp_server.TCPServer: (
        "3bfa72b319509f2b02a757c59348721eb890e6db97fe21ccd7fd08541f2f4ee5"
    ),
    # Its locals context (terminate, terminated) and config; cancels at graceful_timeout
    # the connections' tasks, which build the module's TCPServer.
    hypercorn.asyncio.run.worker_serve: (
        "ae30269c42b954423c2b8c9f1300be2663d269dccdde3e85fb785b328ea4b2ef"
    ),
}


@pytest.mark.parametrize("code", PINNED, ids=lambda code: code.__name__)
def test_the_hypercorn_code_relied_on_is_the_code_checked(code: object) -> None:
    digest = hashlib.sha256(inspect.getsource(code).encode()).hexdigest()
    name = code.__name__
    assert digest == PINNED[code], f"hypercorn's {name} changed: see this file's docstring"
