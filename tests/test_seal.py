"""Sealing's building blocks: the RFC 6962 tree, C2SP signed notes and checkpoints, keygen."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest

from quart_app.seal.merkle import EMPTY_ROOT, CompactRange, leaf_hash, node_hash
from quart_app.seal.note import (
    NoteError,
    Signer,
    Verifier,
    checkpoint_text,
    open_note,
    parse_checkpoint,
)

from helpers.trail import run_log

# The reference implementation's own vector (golang.org/x/mod/sumdb/note, note_test.go).
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqf"
    "qdngotpRZb6KE6RyyBwJnAM=\n"
)


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962's MTH, as section 2.1 defines it: split at the largest power of two below n."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    left, right = reference_root(leaves[:split]), reference_root(leaves[split:])
    return hashlib.sha256(b"\x01" + left + right).digest()


def test_the_compact_range_gives_rfc_6962_roots() -> None:
    leaves = [f"登录日志:用户名:u{n},登录时间:…".encode() for n in range(70)]
    tree = CompactRange()
    assert tree.root() == EMPTY_ROOT == reference_root([])
    for count, leaf in enumerate(leaves, start=1):
        tree.append(leaf)
        assert tree.size == count
        assert tree.root() == reference_root(leaves[:count]), count
        assert len(tree.roots) == bin(count).count("1")
    again = CompactRange(tree.size, tree.roots)
    again.append(b"more")
    assert again.root() == reference_root([*leaves, b"more"])
    assert node_hash(leaf_hash(b"a"), leaf_hash(b"b")) == reference_root([b"a", b"b"])
    with pytest.raises(ValueError):
        CompactRange(3, [EMPTY_ROOT])


def test_notes_are_those_of_the_reference_implementation() -> None:
    signer = Signer.parse(GO_SIGNER)
    assert signer.encoded() == GO_SIGNER
    assert signer.verifier.encoded() == GO_VERIFIER
    assert signer.sign(GO_TEXT) == GO_NOTE  # Ed25519 is deterministic
    verifier = Verifier.parse(GO_VERIFIER)
    assert open_note(GO_NOTE, [verifier]) == (GO_TEXT, [verifier])


@pytest.mark.parametrize(
    "note",
    [
        GO_NOTE.replace("answer", "Answer"),  # the text changed
        GO_NOTE.replace("x08go", "x08gp"),  # the signature changed
        GO_NOTE.replace("\n\n—", "\n—"),  # no blank line
        GO_NOTE[:-10] + "\n",  # a signature cut short
        GO_NOTE.replace("PeterNeumann", "Other"),  # no signature by a known key
        GO_NOTE.replace("\n\n", "\n\x00\n"),  # a control character
        "\xff" * 70000,  # junk, and too long
        "",
    ],
)
def test_a_note_that_does_not_verify_is_refused_not_raised_through(note: str) -> None:
    with pytest.raises(NoteError):
        open_note(note, [Verifier.parse(GO_VERIFIER)])


@pytest.mark.parametrize(
    "key",
    [GO_VERIFIER.replace("c74f20a3", "c74f20a4"), GO_VERIFIER[:-4], "a+b", "", "x" * 100],
)
def test_a_malformed_verifier_key_is_refused(key: str) -> None:
    with pytest.raises(NoteError):
        Verifier.parse(key)


def test_checkpoints_read_back_and_refuse_what_is_no_checkpoint() -> None:
    root = hashlib.sha256(b"root").digest()
    text = checkpoint_text("example.com/log", 42, root)
    assert text == f"example.com/log\n42\n{base64.b64encode(root).decode()}\n"
    assert parse_checkpoint(text) == ("example.com/log", 42, root, ())
    bad = [
        text.replace("\n42\n", f"\n{2**63}\n"),
        text.replace("\n42\n", "\n042\n"),
        text.replace("\n42\n", "\n-1\n"),
        "example.com/log\n42\n",
        text[:-5] + "\n",
    ]
    for case in bad:
        with pytest.raises(NoteError):
            parse_checkpoint(case)


def test_keygen_makes_a_private_key_and_prints_its_public_one(tmp_path: Path) -> None:
    key = tmp_path / "seal.key"
    ran = run_log("keygen", key, "--name", "web-1.example/login-log")
    assert (ran.status, ran.err) == (0, "")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    public = Path(f"{key}.pub").read_text()
    assert ran.out == public
    verifier = Verifier.parse(public)
    signer = Signer.parse(key.read_text())
    assert verifier.name == "web-1.example/login-log"
    assert open_note(signer.sign("checked\n"), [verifier])[0] == "checked\n"
    before = key.read_bytes()
    again = run_log("keygen", key)
    assert again.status == 2
    assert "exists: a key is never overwritten" in again.err
    assert key.read_bytes() == before
    assert run_log("keygen", tmp_path / "other.key", "--name", "a name").status == 2
    assert not (tmp_path / "other.key").exists()


def test_extend_folds_as_append_hash_does() -> None:
    leaves = [leaf_hash(bytes([n]) * n) for n in range(70)]
    for cut in (0, 1, 5, 64, 70):
        one, many = CompactRange(), CompactRange()
        for hashed in leaves[:cut]:
            one.append_hash(hashed)
        many.extend(b"".join(leaves[:cut]))
        many.extend(b"".join(leaves[cut:]))
        for hashed in leaves[cut:]:
            one.append_hash(hashed)
        assert (many.size, many.roots, many.root()) == (one.size, one.roots, one.root())
        assert many.root() == reference_root([bytes([n]) * n for n in range(70)])
