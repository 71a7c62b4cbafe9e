"""``verify``: check a sealed log against its seal file and the host's first public key, or a
sealed table against its checkpoints table and the hosts' keys."""

from __future__ import annotations

import os
import stat
from typing import TextIO

from quart_app.seal.note import NoteError, Verifier
from quart_app.seal.sealer import is_being_written
from quart_app.seal.sidecar import sidecar_path
from quart_app.seal.verify import Report, copies_from, verify

from .sources import Sources, UsageError


def load_keys(given: list[str]) -> list[Verifier]:
    """Each ``--key``: a verifier key as keygen prints it, or a file holding one (``.pub``)."""
    keys = []
    for text in given:
        if "+" not in text or os.path.exists(text):
            text = _read_regular(text, "--key", 4096).decode("utf-8", "replace")
        try:
            keys.append(Verifier.parse(text))
        except (NoteError, ValueError) as exc:
            raise UsageError(f"--key: not a verifier key ({exc})") from None
    return keys


MAX_COPIES = 1 << 28
"""The largest ``--checkpoint`` file read (a journal export of a year's checkpoints fits)."""


def _read_regular(path: str, what: str, count: int) -> bytes:
    # A FIFO or /dev/zero given by mistake: refused, never read for ever.
    try:
        # O_NONBLOCK: a FIFO without a writer would block in open() itself.
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise UsageError(f"{what} {path}: not a regular file")
            return file.read(count)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot be read: {exc.strerror or exc}") from None


def find_seal(logs: list[str], given: str | None) -> str:
    """The seal file: ``--seal``, else ``LOG.seal`` of the last log given that has one."""
    if given:
        return given
    for log in reversed(logs):
        if os.path.exists(sidecar_path(log)):
            return sidecar_path(log)
    return sidecar_path(logs[-1])


def _copies(checkpoints: list[str]) -> list[str]:
    copies = []
    for path in checkpoints:
        data = _read_regular(path, "--checkpoint", MAX_COPIES + 1)
        if len(data) > MAX_COPIES:
            raise UsageError(f"--checkpoint {path}: larger than {MAX_COPIES:,} bytes")
        copies += copies_from(data.decode("utf-8", "replace"))
    return copies


def run_verify(
    logs: list[str],
    keys: list[str],
    checkpoints: list[str],
    start: int | None,
    seal: str | None,
    out: TextIO,
    table: str = "login_log",
) -> int:
    """Verify; print what was proved; 0 when everything verified, 1 when not (2: a table
    that cannot be read)."""
    sources = Sources.of(logs, table)
    if sources.url is not None:
        if start is not None or seal is not None:
            raise UsageError("--start and --seal are a log file's: a table starts at its cut")
        from .verify_table import run_verify_table

        return run_verify_table(sources, load_keys(keys), _copies(checkpoints), out)
    trusted = load_keys(keys)
    for log in logs:
        _read_regular(log, "LOG", 1)
    copies = _copies(checkpoints)
    sealed = find_seal(logs, seal)
    if os.path.exists(sealed) and not os.path.isfile(sealed):
        raise UsageError(f"{sealed}: not a seal file (not a regular file)")
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
    if report.before_start:
        out.write(
            f"{report.before_start:,} checkpoint(s) held elsewhere cover only lines before "
            "--start: not checked\n"
        )
    for failure in report.failures:
        if not failure.startswith("a break: "):
            out.write(f"FAILED: {failure}\n")
    if report.ok and report.unsealed:
        out.write(
            f"OK: every sealed line is as sealed; the last {report.unsealed:,} line(s), written "
            "since the last checkpoint while the app runs, are not sealed yet\n"
        )
    elif report.ok:
        out.write("OK: every line is as sealed\n" if report.trees else "")
    else:
        breaks = sum(1 for tree in report.trees[1:])
        out.write(f"NOT VERIFIED{f' ({breaks} break(s))' if breaks else ''}\n")
