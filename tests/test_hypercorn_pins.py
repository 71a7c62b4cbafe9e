"""The hypercorn code quart_app.http1_errors and quart_app.http2 subclass and replace, pinned.

Both put a subclass of a hypercorn protocol class in its place and rely on that
class's private members. A hypercorn whose code differs fails here: check both
modules against it (does the bug they work around remain? do the members they
use still mean the same?), then pin its code.
"""

from __future__ import annotations

import hashlib
import inspect

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
}


@pytest.mark.parametrize("cls", PINNED, ids=lambda cls: cls.__name__)
def test_the_hypercorn_code_replaced_is_the_code_checked(cls: type) -> None:
    digest = hashlib.sha256(inspect.getsource(cls).encode()).hexdigest()
    assert digest == PINNED[cls], f"hypercorn's {cls.__name__} changed: see this file's docstring"
