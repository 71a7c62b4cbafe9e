"""What sealing signs: checkpoints, and key changes (a checkpoint naming the next key).

A key change is a ``tlog-checkpoint`` body with three extension lines,
``key VERIFIER`` (the next key, in the signed-note verifier form),
``reason WORD`` (``start``, ``epoch``, ``tree`` or ``stop``) and
``records BASE64`` (the SHA-256 of the seal file's lines since the key's own
key change: the checkpoints it signed need not be checked one by one, and no
line of the seal file is taken on trust), signed by the key it replaces:
standard tooling reads it as a checkpoint.
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
    records: bytes = b""  # a key change's digest of the seal file's lines before it

    def text(self) -> str:
        """The note text: origin, size, base64 root, and a key change's three lines."""
        extensions: tuple[str, ...] = ()
        if self.next_key is not None:
            digest = base64.b64encode(self.records).decode()
            extensions = (f"key {self.next_key}", f"reason {self.reason}", f"records {digest}")
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
            or not extensions[2].startswith("records ")
        ):
            raise NoteError(
                "a key change's extension lines are 'key VERIFIER', 'reason WORD' and "
                "'records BASE64'"
            )
        next_key = extensions[0].removeprefix("key ")
        Verifier.parse(next_key)
        try:
            digest = base64.b64decode(extensions[2].removeprefix("records "), validate=True)
        except ValueError:
            raise NoteError("a key change's records digest is base64") from None
        if len(digest) != 32:
            raise NoteError("a key change's records digest is 32 bytes")
        reason = extensions[1].removeprefix("reason ")
        return cls(origin, size, root, next_key, reason, digest)


def is_whole(note: str) -> bool:
    """Whether ``note`` ends in a whole signature line (a key ID and an Ed25519 signature):
    a record a crash or a full disk cut short is damaged, not forged."""
    last = note[:-1].rpartition("\n")[2] if note.endswith("\n") else ""
    try:
        return len(base64.b64decode(last.rpartition(" ")[2], validate=True)) == 68
    except ValueError:
        return False


def records_digest() -> hashlib._Hash:
    """The running digest a key change signs: every line of the seal file since the last
    key change (whole, as written, with its newline), in order; not the key changes."""
    return hashlib.sha256()
