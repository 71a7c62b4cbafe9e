"""The hypercorn code quart_app.http1_errors subclasses and replaces, pinned.

It puts a subclass of a hypercorn protocol class in its place and relies on
that class's private members. A hypercorn whose code differs fails here: check
the module against it (does the bug it works around remain? do the members it
uses still mean the same?), then pin its code.
"""

from __future__ import annotations

import hashlib
import inspect

import hypercorn.protocol
import hypercorn.protocol.h11
import pytest

PINNED = {
    # Builds each connection's protocol from the names replaced.
    hypercorn.protocol.ProtocolWrapper: (
        "caf949187e9b4a816ad4a5f0229773ec01190a6051f6205807de599870c16c17"
    ),
    hypercorn.protocol.h11.H11Protocol: (
        "b32a61e0a8ca2127c7e1cb133281521f6cc73fdefb94b188fb6944e80b175b43"
    ),
}


@pytest.mark.parametrize("cls", PINNED, ids=lambda cls: cls.__name__)
def test_the_hypercorn_code_replaced_is_the_code_checked(cls: type) -> None:
    digest = hashlib.sha256(inspect.getsource(cls).encode()).hexdigest()
    assert digest == PINNED[cls], f"hypercorn's {cls.__name__} changed: see this file's docstring"
