"""Sealing the trail (issue 18): the Merkle tree of its lines, and signed notes.

* :mod:`.merkle`: RFC 6962 hashes and a compact range, the tree's O(log n) state;
* :mod:`.note`: C2SP signed notes with Ed25519 keys, and ``tlog-checkpoint`` bodies.

The formats are small and exact, as Go's ``sumdb/note``; no Python library
implements them, and the cryptography is the ``cryptography`` package's.
"""
