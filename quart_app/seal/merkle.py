"""The RFC 6962 Merkle tree of a log's lines (SHA-256, ``0x00``/``0x01`` prefixes).

:class:`CompactRange` holds only the roots of the perfect subtrees the leaves
so far make: O(log n) hashes, extended one leaf at a time, as a writer appends.
"""

from __future__ import annotations

import hashlib

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of a tree of no leaves (RFC 6962, section 2.1)."""


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class CompactRange:
    """The leaves appended so far, as the roots of their perfect subtrees, largest first."""

    __slots__ = ("_roots", "size")

    def __init__(self, size: int = 0, roots: list[bytes] | None = None) -> None:
        if bin(size).count("1") != len(roots or []):
            raise ValueError("a compact range holds one root per bit set in its size")
        self.size = size
        self._roots = list(roots or [])

    @property
    def roots(self) -> list[bytes]:
        """The subtrees' roots, largest first (one per bit set in ``size``)."""
        return list(self._roots)

    def append(self, leaf: bytes) -> None:
        """Add a leaf (the line's bytes, without its newline)."""
        self.append_hash(leaf_hash(leaf))

    def append_hash(self, hashed: bytes) -> None:
        """Add a leaf by its :func:`leaf_hash`."""
        size = self.size
        while size & 1:  # merge with every subtree of the same height
            hashed = node_hash(self._roots.pop(), hashed)
            size >>= 1
        self._roots.append(hashed)
        self.size += 1

    def extend(self, hashes: bytes) -> None:
        r"""Add leaves by their :func:`leaf_hash`\ es, concatenated (32 bytes each).

        :meth:`append_hash` in one loop: verifying folds every leaf of a year's log.
        """
        roots, size, sha256 = self._roots, self.size, hashlib.sha256
        for start in range(0, len(hashes), 32):
            hashed = hashes[start : start + 32]
            count = size
            while count & 1:
                hashed = sha256(b"\x01" + roots.pop() + hashed).digest()
                count >>= 1
            roots.append(hashed)
            size += 1
        self.size = size

    def root(self) -> bytes:
        """The tree's root hash: the subtrees' roots folded from the smallest."""
        return fold_roots(self._roots)


def fold_roots(roots: list[bytes] | tuple[bytes, ...]) -> bytes:
    """The root of a tree given as its compact range's roots, largest first."""
    if not roots:
        return EMPTY_ROOT
    hashed = roots[-1]
    for left in reversed(roots[:-1]):
        hashed = node_hash(left, hashed)
    return hashed
