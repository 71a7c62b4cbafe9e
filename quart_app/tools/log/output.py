"""Records as ``search`` prints them: the seed's line, JSON Lines, or CSV a spreadsheet opens
safely. Every time is in UTC."""

from __future__ import annotations

import csv
import json
from datetime import UTC
from typing import TextIO

from quart_app.records import json_escaped, text_lines
from quart_app.trail import Found

FORMATS = ("text", "jsonl", "csv")

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
"""What a spreadsheet may read as a formula (OWASP's CSV injection list, and the quote itself,
so that the quote added is always the one to take off)."""


def spreadsheet_safe(value: str) -> str:
    """``value`` with a ``'`` before it when it starts like a formula; otherwise unchanged."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


class Printer:
    """Writes found records to ``stream`` in one of :data:`FORMATS`."""

    def __init__(self, stream: TextIO, form: str) -> None:
        self.stream = stream
        self.form = form
        self._csv = csv.writer(stream, lineterminator="\r\n") if form == "csv" else None
        if self._csv is not None:
            self._csv.writerow(["time", "username", "ip", "source"])

    def write(self, found: Found) -> None:
        """Print one record."""
        record = found.record._replace(time=found.record.time.astimezone(UTC))
        if self.form == "text":
            self.stream.write(text_lines((record,)).decode())
            return
        time = record.time.isoformat(timespec="microseconds")
        ip = None if record.ip == "-" else record.ip
        if self._csv is not None:
            row = [time, record.username, ip or "", found.source]
            self._csv.writerow([spreadsheet_safe(value) for value in row])
            return
        data = {"username": record.username, "time": time, "ip": ip, "source": found.source}
        self.stream.write(json_escaped(json.dumps(data, ensure_ascii=False)) + "\n")
