"""``keygen``: a host's Ed25519 signing key for sealed logs, and its public verifier key."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TextIO

from quart_app.seal.note import NoteError, Signer, check_name

from .sources import UsageError


def default_name() -> str:
    """``HOSTNAME/login-log``: a key name per host, as C2SP recommends (a schema-less URL)."""
    return f"{socket.gethostname()}/login-log"


def keygen(path: Path, name: str | None, out: TextIO) -> None:
    """Write a new key to ``path`` (mode 0600, never over an existing file) and its verifier
    key to ``path.pub``; print the verifier key."""
    try:
        signer = Signer.generate(check_name(name or default_name()))
    except NoteError as exc:
        raise UsageError(f"{exc}: give one with --name") from None
    public = Path(f"{path}.pub")
    written = []
    try:
        # O_EXCL: an existing key is never replaced (it would orphan every seal it made).
        for target, text, mode in ((path, signer.encoded(), 0o600),
                                   (public, signer.verifier.encoded(), 0o644)):  # fmt: skip
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            written.append(target)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(text + "\n")
                file.flush()
                os.fsync(file.fileno())
    except FileExistsError as exc:
        for target in written:  # a key whose .pub could not be made: not made
            target.unlink(missing_ok=True)
        raise UsageError(f"{exc.filename} exists: a key is never overwritten") from None
    except OSError as exc:
        for target in written:
            target.unlink(missing_ok=True)
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror or exc}") from None
    out.write(signer.verifier.encoded() + "\n")
