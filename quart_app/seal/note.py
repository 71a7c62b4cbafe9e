"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, and checkpoint bodies
(c2sp.org/tlog-checkpoint), in the key encodings of Go's ``sumdb/note``.

A note is a text ending in a newline, a blank line, and signature lines
``— NAME base64(key ID || signature)``. The key ID is
``SHA-256(name || 0x0A || 0x01 || public key)[:4]``. A verifier key is written
``NAME+HASH+base64(0x01 || public key)``, a signer key
``PRIVATE+KEY+NAME+HASH+base64(0x01 || seed)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = 0x01
SIGNATURE_PREFIX = "\u2014 "
MAX_NOTE = 1 << 16
"""The longest note read: a checkpoint is a few hundred bytes."""


class NoteError(ValueError):
    """A key or note that is malformed, or a note no trusted key signed."""


def check_name(name: str) -> str:
    """A key name: non-empty, printable, no space and no ``+``."""
    if not name or "+" in name or not name.isprintable() or any(c.isspace() for c in name):
        raise NoteError(f"a key name is printable text without spaces or '+': {name!r}")
    return name


def key_id(name: str, public: bytes) -> bytes:
    """The 4-byte key ID of an Ed25519 public key under ``name``."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public).digest()[:4]


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key."""

    name: str
    public: Ed25519PublicKey

    @property
    def id(self) -> bytes:
        """The key ID."""
        return key_id(self.name, _public_bytes(self.public))

    def encoded(self) -> str:
        """``NAME+HASH+base64(0x01 || public key)``: one line to print or publish."""
        data = base64.b64encode(bytes([ED25519]) + _public_bytes(self.public)).decode()
        return f"{self.name}+{self.id.hex()}+{data}"

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """A verifier key as :meth:`encoded` writes it; :class:`NoteError` if it is not one."""
        name, hash_hex, data = _three_parts(text.strip())
        raw = _decode(data)
        if len(raw) != 33 or raw[0] != ED25519:
            raise NoteError("not an Ed25519 verifier key")
        verifier = cls(check_name(name), Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.id.hex() != hash_hex:
            raise NoteError("the verifier key's hash does not match its name and key")
        return verifier


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 private key."""

    name: str
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A new key under ``name``."""
        return cls(check_name(name), Ed25519PrivateKey.generate())

    @property
    def verifier(self) -> Verifier:
        """Its public half."""
        return Verifier(self.name, self.private.public_key())

    def encoded(self) -> str:
        """``PRIVATE+KEY+NAME+HASH+base64(0x01 || seed)``: secret."""
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        data = base64.b64encode(bytes([ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.id.hex()}+{data}"

    @classmethod
    def parse(cls, text: str) -> Signer:
        """A signer key as :meth:`encoded` writes it; :class:`NoteError` if it is not one."""
        text = text.strip()
        if not text.startswith("PRIVATE+KEY+"):
            raise NoteError("not a signer key (it starts PRIVATE+KEY+)")
        name, hash_hex, data = _three_parts(text.removeprefix("PRIVATE+KEY+"))
        raw = _decode(data)
        if len(raw) != 33 or raw[0] != ED25519:
            raise NoteError("not an Ed25519 signer key")
        signer = cls(check_name(name), Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.verifier.id.hex() != hash_hex:
            raise NoteError("the signer key's hash does not match its name and key")
        return signer

    def sign(self, text: str) -> str:
        """The note: ``text`` (ending in a newline), a blank line, this key's signature line."""
        if not text.endswith("\n"):
            raise NoteError("a note's text ends in a newline")
        signature = self.private.sign(text.encode())
        line = base64.b64encode(self.verifier.id + signature).decode()
        return f"{text}\n{SIGNATURE_PREFIX}{self.name} {line}\n"


def open_note(note: str, verifiers: list[Verifier]) -> tuple[str, list[Verifier]]:
    """The text of ``note`` and the known keys that signed it.

    Signatures by unknown keys are ignored; one by a known key that does not
    verify, or none by a known key, is :class:`NoteError`.
    """
    if len(note) > MAX_NOTE:
        raise NoteError(f"a note longer than {MAX_NOTE:,} characters")
    if any(char < " " and char != "\n" for char in note) or not note.endswith("\n"):
        raise NoteError("a note holds no control character but newlines, and ends in one")
    text, blank, signatures = note.rpartition("\n\n")
    if not blank or not signatures:
        raise NoteError("a note is a text, a blank line, and signature lines")
    text += "\n"
    signed_by = []
    for line in signatures[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError(f"not a signature line: {line[:80]!r}")
        name, _, data = line[len(SIGNATURE_PREFIX) :].partition(" ")
        raw = _decode(data)
        if len(raw) < 5:
            raise NoteError("a signature too short to hold a key ID")
        for verifier in verifiers:
            if verifier.name == name and verifier.id == raw[:4]:
                try:
                    verifier.public.verify(raw[4:], text.encode())
                except InvalidSignature:
                    raise NoteError(f"the signature of {name} does not verify") from None
                signed_by.append(verifier)
    if not signed_by:
        raise NoteError("no signature by a known key")
    return text, signed_by


def checkpoint_text(origin: str, size: int, root: bytes, extensions: tuple[str, ...] = ()) -> str:
    """A ``tlog-checkpoint`` body: origin, tree size, base64 root hash, extension lines."""
    lines = [origin, str(size), base64.b64encode(root).decode(), *extensions]
    return "".join(f"{line}\n" for line in lines)


def parse_checkpoint(text: str) -> tuple[str, int, bytes, tuple[str, ...]]:
    """Origin, size, root hash and extension lines of a checkpoint body."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "" or not lines[0]:
        raise NoteError("a checkpoint is an origin, a size and a root hash, a line each")
    origin, size, root, *extensions = lines[:-1]
    if not size.isascii() or not size.isdigit() or (len(size) > 1 and size[0] == "0"):
        raise NoteError(f"not a tree size: {size[:40]!r}")
    if len(size) > 19 or int(size) >= 1 << 63:  # int() of 5,000 digits raises
        raise NoteError("a tree size of 2^63 or more")
    hashed = _decode(root)
    if len(hashed) != 32:
        raise NoteError("a root hash is 32 bytes")
    return origin, int(size), hashed, tuple(extensions)


def _three_parts(text: str) -> tuple[str, str, str]:
    parts = text.split("+", 2)  # the base64 data may hold "+"
    if len(parts) != 3 or len(parts[1]) != 8:
        raise NoteError("a key is NAME+HASH+DATA")
    return parts[0], parts[1], parts[2]


def _decode(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("not standard base64") from None
