"""Log files read back: whole ones (plain or gzip-compressed, as rotation leaves them), and
the live one followed as it grows, through rotation."""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from .found import Bad, Found
from .lines import could_match, scan
from .query import Query

HEAD = 256
"""Bytes at a followed file's start compared at each read: a rewritten file has others."""

CHUNK = 1 << 22
"""Bytes read at a time: large enough that a search runs at the speed of ``bytes.find``."""

MAX_LINE = 1 << 20
"""Bytes of a line kept while looking for its end: a log line is at most a few kilobytes."""

GZIP_MAGIC = b"\x1f\x8b"

_GZIP_ERRORS = (EOFError, zlib.error)
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate data


def is_gzip(file: BinaryIO) -> bool:
    """Whether ``file`` (at its start) is gzip-compressed, by its first bytes, not its name."""
    head = file.read(2)
    file.seek(0)
    return head == GZIP_MAGIC


def read_files(paths: Iterable[str], query: Query) -> Iterator[Found | Bad]:
    """The matching records of each file in turn, in file order, and what could not be read."""
    for path in paths:
        yield from read_file(path, query)


def read_file(path: str, query: Query) -> Iterator[Found | Bad]:
    """The matching records of one file, plain or gzip-compressed, and what could not be read.

    A gzip file cut short yields what it holds up to the cut, then says so.
    """
    try:
        raw = open(path, "rb")  # noqa: SIM115 (closed below, once the generator ends)
    except OSError as exc:
        yield Bad(path, f"cannot be read: {exc.strerror or exc}", whole_source=True)
        return
    with raw:
        line, rest, skipping = 1, b"", False
        try:
            for chunk in gunzipped(raw) if is_gzip(raw) else iter(lambda: raw.read(CHUNK), b""):
                if skipping:  # the rest of a line too long to keep
                    cut = chunk.find(b"\n")
                    if cut < 0:
                        continue
                    chunk, skipping, line = chunk[cut + 1 :], False, line + 1
                data = rest + chunk
                end = data.rfind(b"\n") + 1
                rest = data[end:]
                yield from scan(data[:end], line, path, query)
                line += data.count(b"\n", 0, end)
                if len(rest) > MAX_LINE:  # /dev/zero, or a file that is no log at all
                    yield Bad(f"{path}:{line}", f"a line longer than {MAX_LINE:,} bytes: skipped")
                    rest, skipping = b"", True
        except _GZIP_ERRORS as exc:
            yield Bad(f"{path}:{line}", f"the compressed data ends early or is corrupt ({exc})")
            return
        except OSError as exc:  # a directory opens, but does not read
            where = path if line == 1 else f"{path}:{line}"
            yield Bad(where, f"cannot be read: {exc.strerror or exc}", whole_source=line == 1)
            return
        if rest and could_match(rest, query):
            yield Bad(f"{path}:{line}", "the last line has no newline (torn, or being written)")


def gunzipped(raw: BinaryIO) -> Iterator[bytes]:
    """The data of a gzip file, member after member, as it is decompressed.

    Not ``gzip.GzipFile``: a file cut short raises there, and what was
    decompressed in that call is lost; here it is yielded before the error.
    """
    inflate, fed = zlib.decompressobj(_GZIP_WBITS), False
    while chunk := raw.read(CHUNK):
        while chunk:
            fed = True
            yield inflate.decompress(chunk)
            if not inflate.eof:
                break
            chunk = inflate.unused_data  # the next member's, if any
            inflate, fed = zlib.decompressobj(_GZIP_WBITS), False
    if fed and not inflate.eof:
        yield inflate.flush()
        raise EOFError("the file ends before its compressed data does")


class Tail:
    """A plain log file followed as it grows: each :meth:`read` returns the matching records of
    the whole lines added since the last.

    A line being written is left for a later read. When the path is rotated
    away (renamed or removed) and a new file takes its place, the old file is
    still read for ``drain_reads`` more reads (a writer may finish a batch in
    it), and the new one from its start. A file truncated in place is read
    again from its start. ``missing`` says why the file cannot be read as of
    the last read, ``None`` when it can; a file that exists but cannot be
    opened (a directory, no permission) raises ``OSError``.
    """

    drain_reads = 10

    def __init__(self, path: str, query: Query | None = None) -> None:
        self.path = path
        self.query = query or Query()
        self.missing: str | None = None
        self._file: BinaryIO | None = None
        self._line = 1
        self._partial = b""
        self._draining: list[tuple[BinaryIO, int, bytes, int]] = []
        self._vanished = False
        self._head = b""  # the file's first bytes, to tell a rewrite in place

    def read(self) -> list[Found | Bad]:
        """What matches among the whole lines added since the last call (everything, at first)."""
        found: list[Found | Bad] = []
        self._drain(found)
        if self._file is None and not self._open(found):
            return found
        assert self._file is not None
        if self._rewritten():
            found.append(Bad(self.path, "truncated in place: read again from its start"))
            self._file.seek(0)
            self._line, self._partial, self._head = 1, b"", b""
        self._take(self._file.read(), found)
        if len(self._head) < HEAD:
            self._head = os.pread(self._file.fileno(), HEAD, 0)
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            now = None
        mine = os.fstat(self._file.fileno())
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            if mine.st_size < self._file.tell():
                found.append(Bad(self.path, "truncated in place: read again from its start"))
                self._file.seek(0)
                self._line, self._partial, self._head = 1, b"", b""
            return found
        self._draining.append((self._file, self._line, self._partial, self.drain_reads))
        self._file = None
        if now is None:
            self.missing = f"the log file {self.path!r} vanished (rotated away?)"
            if not self._vanished:
                found.append(Bad(f"{self.path}:{self._line}", "vanished: waiting for it to return"))
            self._vanished = True
            return found
        if self._open(found):
            assert self._file is not None
            self._take(self._file.read(), found)
        return found

    def _rewritten(self) -> bool:
        # A copytruncate that wrote past the old end between two reads leaves the
        # size no smaller: the file's first bytes tell it apart.
        assert self._file is not None
        return bool(self._head) and os.pread(self._file.fileno(), len(self._head), 0) != self._head

    def close(self) -> None:
        """Close the files still open."""
        for file, *_ in self._draining:
            file.close()
        self._draining.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self, found: list[Found | Bad]) -> bool:
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 (kept open between reads)
        except FileNotFoundError:  # not created yet, or rotated away: it may come
            self.missing = f"the log file {self.path!r} does not exist"
            return False
        self.missing = None
        self._vanished = False
        self._line, self._partial, self._head = 1, b"", b""
        return True

    def _take(self, data: bytes, found: list[Found | Bad]) -> None:
        self._line, self._partial = _lines(
            self._partial + data, self._line, self.path, self.query, found
        )

    def _drain(self, found: list[Found | Bad]) -> None:
        still = []
        for file, line, partial, reads in self._draining:
            line, partial = _lines(partial + file.read(), line, self.path, self.query, found)
            if reads > 1:
                still.append((file, line, partial, reads - 1))
                continue
            if partial and could_match(partial, self.query):
                found.append(Bad(f"{self.path}:{line}", "the last line has no newline (torn)"))
            file.close()
        self._draining = still


def _lines(
    data: bytes, line: int, path: str, query: Query, found: list[Found | Bad]
) -> tuple[int, bytes]:
    """Scan the whole lines of ``data`` into ``found``; the next line's number and the rest."""
    end = data.rfind(b"\n") + 1
    found += scan(data[:end], line, path, query)
    return line + data.count(b"\n", 0, end), data[end:]
