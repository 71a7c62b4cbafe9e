"""``verify postgresql://...``: a sealed table checked, and what was proved printed."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from quart_app.seal.note import Verifier
from quart_app.seal.table_verify import TableReport, verify_table

from .sources import Sources

UNREADABLE = 2


def run_verify_table(sources: Sources, keys: list[Verifier], copies: list[str], out: TextIO) -> int:
    """Verify the table; print the report; 0 verified, 1 not, 2 the table cannot be read."""
    from quart_app.trail import table as tables

    async def run() -> TableReport | str:
        assert sources.url is not None
        try:
            connection = await tables.connect(sources.url, seconds=600)
        except tables.SourceError as exc:
            return str(exc)
        try:
            return await verify_table(connection, sources.table, keys, copies)
        except Exception as exc:  # a missing table, a lost connection: no password in either
            return f"table {sources.table}: {type(exc).__name__}: {exc}"
        finally:
            connection.terminate()

    report = asyncio.run(run())
    if isinstance(report, str):
        sys.stderr.write(f"quart-app-log verify: {report}\n")
        return UNREADABLE
    print_report(report, out)
    return 0 if report.ok else 1


def print_report(report: TableReport, out: TextIO) -> None:
    """What was proved of each stream, what could not be, and what failed."""
    for stream in report.streams:
        end = "clean stop" if stream.stopped else "no clean stop"
        out.write(
            f"stream {stream.name}: {stream.rows:,} row(s), sealed up to position "
            f"{stream.sealed:,} by {stream.checkpoints:,} checkpoint(s) and "
            f"{stream.key_changes:,} key change(s); {end}\n"
        )
        if stream.cut:
            out.write(
                f"  verified from the cut at position {stream.cut:,} (purge): the rows before "
                "it were removed, not checked\n"
            )
        if stream.set_aside:
            shown = ", ".join(f"{position:,}" for position in stream.set_aside[:10])
            more = ", ..." if len(stream.set_aside) > 10 else ""
            out.write(
                f"  {len(stream.set_aside):,} row(s) set aside (the table refused them; "
                f"not tampering): position(s) {shown}{more}\n"
            )
        if stream.unsealed:
            out.write(
                f"  {stream.unsealed:,} row(s) after its last checkpoint are not sealed: "
                "its process is running, or ended without a clean stop (a crash, or records "
                "left in the spool)\n"
            )
        for failure in stream.failures:
            out.write(f"FAILED: {failure}\n")
        if stream.named > len(stream.failures):
            out.write(f"FAILED: ... and {stream.named - len(stream.failures):,} more row(s)\n")
    if report.external:
        out.write(f"{report.external:,} checkpoint(s) held elsewhere found in the table\n")
    if report.before_cut:
        out.write(
            f"{report.before_cut:,} checkpoint(s) held elsewhere are before a cut: not checked\n"
        )
    for failure in report.failures:
        out.write(f"FAILED: {failure}\n")
    if report.ok:
        unsealed = sum(stream.unsealed for stream in report.streams)
        tail = f"; {unsealed:,} row(s) not sealed yet (see above)" if unsealed else ""
        out.write(f"OK: {report.rows:,} row(s) of {len(report.streams):,} stream(s) read, "
                  f"every sealed row as sealed{tail}\n")  # fmt: skip
    else:
        out.write("NOT VERIFIED\n")
