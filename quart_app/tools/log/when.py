"""The times a reader is asked about: an ISO 8601 date or date-time, or a span back from now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_SPAN = re.compile(r"([0-9]{1,9})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``text`` as a UTC time: ``2026-12-01`` (midnight), ``2026-12-01T08:30``, with an
    offset (``+08:00``, ``Z``) honoured and UTC when none is given; or ``90m``, ``24h``,
    ``7d`` (also ``s`` and ``w``) back from ``now``. Raises ``ValueError`` for anything else.
    """
    span = _SPAN.fullmatch(text)
    if span:
        now = now or datetime.now(UTC)
        try:
            return now - timedelta(**{_UNITS[span[2]]: int(span[1])})
        except OverflowError:
            raise ValueError(f"not a time: {text!r} reaches before the year 1") from None
    if not text[:4].isdigit():  # fromisoformat takes forms no one means as a time
        raise ValueError(f"not a time: {text!r} (2026-12-01, 2026-12-01T08:30+08:00 or 7d)")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (2026-12-01, 2026-12-01T08:30+08:00 or 7d)"
        ) from None
    try:
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"not a time: {text!r} is out of range in UTC") from None
