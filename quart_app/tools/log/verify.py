"""``verify``: check a sealed log against its seal file and the host's first public key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from quart_app.seal.note import NoteError, Verifier
from quart_app.seal.sealer import is_being_written
from quart_app.seal.sidecar import sidecar_path
from quart_app.seal.verify import Report, copies_from, verify

from .sources import UsageError


def load_keys(given: list[str]) -> list[Verifier]:
    """Each ``--key``: a verifier key as keygen prints it, or a file holding one (``.pub``)."""
    keys = []
    for text in given:
        if "+" not in text or os.path.exists(text):
            try:
                text = Path(text).read_text(encoding="ascii", errors="replace")[:4096]
            except OSError as exc:
                raise UsageError(f"--key {text}: cannot be read: {exc.strerror or exc}") from None
        try:
            keys.append(Verifier.parse(text))
        except (NoteError, ValueError) as exc:
            raise UsageError(f"--key: not a verifier key ({exc})") from None
    return keys


def find_seal(logs: list[str], given: str | None) -> str:
    """The seal file: ``--seal``, else ``LOG.seal`` of the last log given that has one."""
    if given:
        return given
    for log in reversed(logs):
        if os.path.exists(sidecar_path(log)):
            return sidecar_path(log)
    return sidecar_path(logs[-1])


def run_verify(
    logs: list[str],
    keys: list[str],
    checkpoints: list[str],
    start: int | None,
    seal: str | None,
    out: TextIO,
) -> int:
    """Verify; print what was proved; 0 when everything verified, 1 when not."""
    trusted = load_keys(keys)
    for log in logs:
        try:
            with open(log, "rb") as file:
                file.read(1)
        except OSError as exc:
            raise UsageError(f"{log}: cannot be read: {exc.strerror or exc}") from None
    copies = []
    for path in checkpoints:
        try:
            copies += copies_from(Path(path).read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            reason = exc.strerror or exc
            raise UsageError(f"--checkpoint {path}: cannot be read: {reason}") from None
    sealed = find_seal(logs, seal)
    running = is_being_written(sealed.removesuffix(".seal"))
    report = verify(logs, sealed, trusted, copies=copies, start=start, running=running)
    _print(report, out)
    return 0 if report.ok else 1


def _print(report: Report, out: TextIO) -> None:
    for name, lines in report.files:
        out.write(f"{name}: {lines:,} line(s) read\n")
    for tree in report.trees:
        if tree.broke is not None:
            facts = tree.broke
            details = ", ".join(
                f"{key} {facts[key]}" for key in ("line", "expected", "found") if key in facts
            )
            out.write(f"BREAK: {facts.get('why', 'no reason recorded')}")
            out.write(f" ({details})\n" if details else "\n")
        keys = len(tree.keys)
        out.write(
            f"tree {tree.origin}: {tree.lines:,} line(s), sealed up to line {tree.sealed:,} by "
            f"{tree.checkpoints:,} checkpoint(s) and {keys:,} key change(s)\n"
        )
        if tree.started_at:
            out.write(
                f"  verified from line {tree.started_at + 1:,} (--start): the lines before "
                "were not checked\n"
            )
        if tree.failure:
            out.write(f"FAILED: {tree.failure}\n")
    if report.damaged:
        out.write(f"{report.damaged:,} damaged line(s) in the seal file skipped\n")
    if report.external:
        out.write(f"{report.external:,} checkpoint(s) held elsewhere checked\n")
    for failure in report.failures:
        if not failure.startswith("a break: "):
            out.write(f"FAILED: {failure}\n")
    if report.unsealed and report.ok:
        out.write(
            f"{report.unsealed:,} line(s) at the end are not sealed yet (written since the last "
            "checkpoint: normal while the app runs)\n"
        )
    if report.ok:
        out.write("OK: every line is as sealed\n" if report.trees else "")
    else:
        breaks = sum(1 for tree in report.trees[1:])
        out.write(f"NOT VERIFIED{f' ({breaks} break(s))' if breaks else ''}\n")
