"""``stats``: logins per hour or day, distinct users and addresses, the top ones, a chart."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from quart_app.records import escape
from quart_app.trail import Found

TOP = 10
"""How many users and addresses the top lists name."""

BUCKETS = ("hour", "day")


def bucket(time: datetime, by: str) -> str:
    """The hour or day of a UTC ``time``, as ``2026-12-01 08:00`` or ``2026-12-01``.

    Not ``strftime``: it writes the year 99 as ``99`` on some systems."""
    day = f"{time.year:04d}-{time.month:02d}-{time.day:02d}"
    return f"{day} {time.hour:02d}:00" if by == "hour" else day


class Stats:
    """Figures over the records added to it."""

    def __init__(self, by: str) -> None:
        self.by = by
        self.logins = 0
        self.per_bucket: Counter[str] = Counter()
        self.users: Counter[str] = Counter()
        self.addresses: Counter[str] = Counter()
        self.first: datetime | None = None
        self.last: datetime | None = None

    def add(self, found: Found) -> None:
        """Count one record."""
        username, time, ip = found.record
        time = time.astimezone(UTC)
        self.logins += 1
        self.per_bucket[bucket(time, self.by)] += 1
        self.users[username] += 1
        self.addresses[ip] += 1
        self.first = time if self.first is None else min(self.first, time)
        self.last = time if self.last is None else max(self.last, time)

    def report(self, out: TextIO) -> None:
        """The figures as text; usernames escaped as in the log, so none can forge a line."""
        unknown = self.addresses.get("-", 0)
        addresses = len(self.addresses) - ("-" in self.addresses)
        lines = [f"logins              {self.logins:,}"]
        if self.first is not None and self.last is not None:
            lines += [f"first               {self.first.isoformat(sep=' ')[:19]} UTC"]
            lines += [f"last                {self.last.isoformat(sep=' ')[:19]} UTC"]
        lines += [f"distinct users      {len(self.users):,}"]
        lines += [f"distinct addresses  {addresses:,}"]
        if unknown:
            lines += [f"address unknown     {unknown:,} logins"]
        lines += ["", f"logins per {self.by} (UTC)"]
        lines += [f"  {bucket}  {count:>10,}" for bucket, count in sorted(self.per_bucket.items())]
        lines += ["", "top users"]
        lines += [f"  {count:>10,}  {escape(name)}" for name, count in _top(self.users)]
        lines += ["", "top addresses"]
        top = _top(Counter({ip: n for ip, n in self.addresses.items() if ip != "-"}))
        lines += [f"  {count:>10,}  {escape(ip)}" for ip, count in top]
        out.write("\n".join(lines) + "\n")

    def plot(self, path: Path) -> None:
        """Logins per hour or day as a bar chart in a PNG file.

        No username is drawn: a chart's font may lack its characters, and the
        text report names the top users.
        """
        import matplotlib

        matplotlib.use("Agg")  # no display needed, none opened
        import matplotlib.pyplot as plt
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        buckets = sorted(self.per_bucket)
        times = [datetime.fromisoformat(name).replace(tzinfo=UTC) for name in buckets]
        width = 1 / 24 if self.by == "hour" else 1.0
        figure, axes = plt.subplots(figsize=(10, 4.5), layout="constrained")
        try:
            axes.bar(times, [self.per_bucket[b] for b in buckets], width=width * 0.9)
            locator = AutoDateLocator()
            axes.xaxis.set_major_locator(locator)
            axes.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))
            axes.set_ylabel(f"logins per {self.by}")
            axes.set_xlabel("time (UTC)")
            axes.set_title(
                f"{self.logins:,} logins, {len(self.users):,} users, "
                f"{len(self.addresses) - ('-' in self.addresses):,} addresses"
            )
            axes.grid(axis="y", alpha=0.3)
            figure.savefig(path, dpi=100)
        finally:
            plt.close(figure)


def _top(counts: Counter[str]) -> list[tuple[str, int]]:
    # Ties in name order, so that the same records always give the same report.
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP]
