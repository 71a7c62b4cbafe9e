"""What sealing signs: checkpoints, and key changes (a checkpoint naming the next key).

A key change is a ``tlog-checkpoint`` body with three extension lines,
``key VERIFIER`` (the next key, in the signed-note verifier form),
``reason WORD`` (``start``, ``epoch``, ``tree`` or ``stop``) and
``checkpoints BASE64`` (the SHA-256 of the checkpoint records the key signed
since its own key change, so that they need not be checked one by one),
signed by the key it replaces: standard tooling reads it as a checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from .note import NoteError, Verifier, checkpoint_text, parse_checkpoint

REASONS = ("start", "epoch", "tree", "stop")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint's body, or a key change's (``next_key`` and ``reason`` set)."""

    origin: str
    size: int
    root: bytes
    next_key: str | None = None
    reason: str | None = None
    checkpoints: bytes = b""  # a key change's digest of the checkpoints signed before it

    def text(self) -> str:
        """The note text: origin, size, base64 root, and a key change's three lines."""
        extensions: tuple[str, ...] = ()
        if self.next_key is not None:
            digest = base64.b64encode(self.checkpoints).decode()
            extensions = (f"key {self.next_key}", f"reason {self.reason}", f"checkpoints {digest}")
        return checkpoint_text(self.origin, self.size, self.root, extensions)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """A checkpoint or key change from its note text; :class:`NoteError` if neither."""
        origin, size, root, extensions = parse_checkpoint(text)
        if not extensions:
            return cls(origin, size, root)
        if (
            len(extensions) != 3
            or not extensions[0].startswith("key ")
            or not extensions[1].startswith("reason ")
            or extensions[1].removeprefix("reason ") not in REASONS
            or not extensions[2].startswith("checkpoints ")
        ):
            raise NoteError(
                "a key change's extension lines are 'key VERIFIER', 'reason WORD' and "
                "'checkpoints BASE64'"
            )
        next_key = extensions[0].removeprefix("key ")
        Verifier.parse(next_key)
        try:
            digest = base64.b64decode(extensions[2].removeprefix("checkpoints "), validate=True)
        except ValueError:
            raise NoteError("a key change's checkpoints digest is base64") from None
        if len(digest) != 32:
            raise NoteError("a key change's checkpoints digest is 32 bytes")
        reason = extensions[1].removeprefix("reason ")
        return cls(origin, size, root, next_key, reason, digest)


def checkpoints_digest() -> hashlib._Hash:
    """The running digest of the checkpoint records a key signs: each ``C`` line of the seal
    file, as written, with its newline, in order."""
    return hashlib.sha256()
