"""The sources a command reads: log files in the order given, or one ``postgresql://`` table."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from quart_app.trail import Bad, Found, Query, read_files
from quart_app.trail.where import is_database_url, url_scheme


def _looks_like_a_url(where: str) -> bool:
    # "scheme://...", or "scheme:...@host": what a mistyped database URL looks like.
    text = where.strip()
    scheme = url_scheme(text)
    if scheme is not None:
        return True
    head, colon, rest = text.partition(":")
    return bool(colon) and head.isalnum() and "@" in rest and not os.path.exists(where)


class UsageError(ValueError):
    """The command line asks for something that cannot be done; the message says what."""


@dataclass(frozen=True, slots=True)
class Sources:
    """Log files, or a database URL and its table."""

    files: tuple[str, ...] = ()
    url: str | None = None
    table: str = "login_log"

    @classmethod
    def of(cls, given: list[str], table: str) -> Sources:
        """The sources named on the command line; files and a URL do not mix."""
        for where in given:
            scheme = url_scheme(where.strip()) or where.strip().partition(":")[0]
            if not is_database_url(where) and _looks_like_a_url(where):
                # Not a file either: said without the rest, which may hold a password.
                raise UsageError(
                    f"a source starting {scheme[:20]!r}: is neither a postgresql:// URL nor a "
                    "file name to read (the rest is not shown: it may hold a password)"
                )
        urls = [where for where in given if is_database_url(where)]
        if not urls:
            return cls(files=tuple(given), table=table)
        if len(given) > 1:
            raise UsageError("give log files, or one postgresql:// URL, not both or two URLs")
        return cls(url=urls[0], table=table)

    async def read(
        self, query: Query, *, last: int | None = None, newest_first: bool = False
    ) -> AsyncIterator[Found | Bad]:
        """What matches, in the sources' order (newest first if asked), and what was bad.

        ``last``: only the newest that many matches. A table does both in SQL;
        files are read in order and the last matches kept.
        """
        if self.url is None:
            if last is None and not newest_first:
                for item in read_files(self.files, query):
                    yield item
                return
            kept: list[Found] = []
            for item in read_files(self.files, query):
                if isinstance(item, Bad):
                    yield item
                    continue
                kept.append(item)
                if last is not None and len(kept) >= 2 * last:
                    del kept[:-last]  # in steps, not per record
            kept = kept[-last:] if last is not None else kept
            for found in reversed(kept) if newest_first else kept:
                yield found
            return
        from quart_app.trail import table as tables  # asyncpg: only for a table

        try:
            connection = await tables.connect(self.url)
        except tables.SourceError as exc:
            yield Bad("source", str(exc), whole_source=True)
            return
        try:
            async for found in tables.search(
                connection, self.table, query, last=last, newest_first=newest_first
            ):
                yield found
        except Exception as exc:  # a missing table, a lost connection: no password in either
            yield Bad(f"table {self.table}", f"{type(exc).__name__}: {exc}", whole_source=True)
        finally:
            connection.terminate()
