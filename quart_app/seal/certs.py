"""What sealing signs: checkpoints, and key changes (a checkpoint naming the next key).

A key change is a ``tlog-checkpoint`` body with two extension lines,
``key VERIFIER`` (the next key, in the signed-note verifier form) and
``reason WORD`` (``start``, ``epoch``, ``tree`` or ``stop``), signed by the
key it replaces: standard tooling reads it as a checkpoint.
"""

from __future__ import annotations

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

    def text(self) -> str:
        """The note text: origin, size, base64 root, and a key change's two lines."""
        extensions: tuple[str, ...] = ()
        if self.next_key is not None:
            extensions = (f"key {self.next_key}", f"reason {self.reason}")
        return checkpoint_text(self.origin, self.size, self.root, extensions)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """A checkpoint or key change from its note text; :class:`NoteError` if neither."""
        origin, size, root, extensions = parse_checkpoint(text)
        if not extensions:
            return cls(origin, size, root)
        if (
            len(extensions) != 2
            or not extensions[0].startswith("key ")
            or not extensions[1].startswith("reason ")
            or extensions[1].removeprefix("reason ") not in REASONS
        ):
            raise NoteError("a key change's extension lines are 'key VERIFIER' and 'reason WORD'")
        next_key = extensions[0].removeprefix("key ")
        Verifier.parse(next_key)
        return cls(origin, size, root, next_key, extensions[1].removeprefix("reason "))
