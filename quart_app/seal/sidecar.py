"""The sidecar: what sealing keeps beside a log (``LOG.seal``), one record per line.

The format is in docs/log-format.md. Each record is ASCII text, its fields
separated by single spaces, ending in a newline; binary fields are standard
base64. Writers append under the log's lock; a line a crash left torn is
ended with a newline by the next append and is then a damaged record, which
readers skip and count.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

HEADER = b"quart-app-log seal 1\n"
STDERR_PREFIX = "login-log-checkpoint "
"""How a note's copy on stderr begins; the rest of the line is the note, base64."""
HASH_SIZE = 32
READ_CHUNK = 1 << 20
MAX_RECORD = 1 << 24
"""The longest record read (a batch of 2,048 hashes is about 90 kB)."""


def sidecar_path(log_path: str) -> str:
    """Where the sidecar of the log at ``log_path`` is: ``LOG.seal``."""
    return f"{log_path}.seal"


@dataclass(frozen=True, slots=True)
class Tree:
    """``T ORIGIN``: a tree begins, its leaves counted from 0."""

    origin: str

    def encode(self) -> bytes:
        return f"T {self.origin}\n".encode()


@dataclass(frozen=True, slots=True)
class Break:
    """``B JSON``: why the tree before the next ``T`` ends (the log no longer matched)."""

    facts: dict[str, object]

    def encode(self) -> bytes:
        return b"B " + json.dumps(self.facts, ensure_ascii=True, sort_keys=True).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class File:
    """``F INDEX DEV:INODE``: a log file begins with the tree's leaf ``index``."""

    index: int
    identity: tuple[int, int]

    def encode(self) -> bytes:
        return f"F {self.index} {self.identity[0]}:{self.identity[1]}\n".encode()


@dataclass(frozen=True, slots=True)
class Moved:
    """``M INDEX DEV:INODE``: the current file (begun with leaf ``index``) is now the file
    ``DEV:INODE``, the same lines (copied back, restored, saved by an editor)."""

    index: int
    identity: tuple[int, int]

    def encode(self) -> bytes:
        return f"M {self.index} {self.identity[0]}:{self.identity[1]}\n".encode()


@dataclass(frozen=True, slots=True)
class Start:
    """``S PID``: a writing process started; lines may follow a clean stop again."""

    pid: int

    def encode(self) -> bytes:
        return f"S {self.pid}\n".encode()


@dataclass(frozen=True, slots=True)
class Leaves:
    """``L INDEX END HASHES``: the leaf hashes of leaves ``index``..; the lines end at byte
    ``end`` of the current file."""

    index: int
    end: int
    hashes: bytes

    @property
    def count(self) -> int:
        return len(self.hashes) // HASH_SIZE

    def encode(self) -> bytes:
        return b"L %d %d %s\n" % (self.index, self.end, base64.b64encode(self.hashes))


@dataclass(frozen=True, slots=True)
class Signed:
    """``C NOTE [RANGE]`` (a checkpoint) or ``K NOTE [RANGE]`` (a key change): a signed note,
    base64, and the compact range of the tree at its size, base64, where given."""

    kind: str  # "C" or "K"
    note: str
    range: tuple[bytes, ...] | None = None

    def encode(self) -> bytes:
        fields = [self.kind, one_line(self.note)]
        if self.range:  # the range of an empty tree is empty: not written
            fields.append(base64.b64encode(b"".join(self.range)).decode())
        return (" ".join(fields) + "\n").encode()


Record = Tree | Break | File | Moved | Start | Leaves | Signed


class Damaged(ValueError):
    """A sidecar line that is not a record."""


def one_line(note: str) -> str:
    """A signed note as one line: its UTF-8 bytes in standard base64."""
    return base64.b64encode(note.encode()).decode()


def note_of(line: str) -> str:
    """The note :func:`one_line` encoded; :class:`Damaged` if it is not one."""
    try:
        return _b64(line.encode()).decode()
    except UnicodeDecodeError:
        raise Damaged("a note is UTF-8") from None


def parse(line: bytes) -> Record:
    """The record of one sidecar line (without its newline); :class:`Damaged` if none."""
    kind, _, rest = line.partition(b" ")
    fields = rest.split(b" ")
    try:
        if kind == b"L" and len(fields) == 3:
            hashes = _b64(fields[2])
            if not hashes or len(hashes) % HASH_SIZE:
                raise Damaged("leaf hashes are 32 bytes each")
            return Leaves(_number(fields[0]), _number(fields[1]), hashes)
        if kind in (b"C", b"K") and len(fields) in (1, 2):
            ranged = None
            if len(fields) == 2:
                raw = _b64(fields[1])
                if not raw or len(raw) % HASH_SIZE or len(raw) > 64 * HASH_SIZE:
                    raise Damaged("a compact range is up to 64 hashes of 32 bytes")
                ranged = tuple(raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE))
            return Signed(kind.decode(), note_of(fields[0].decode("ascii")), ranged)
        if kind in (b"F", b"M") and len(fields) == 2:
            dev, colon, ino = fields[1].partition(b":")
            if not colon:
                raise Damaged("a file identity is DEV:INODE")
            made = File if kind == b"F" else Moved
            return made(_number(fields[0]), (_number(dev), _number(ino)))
        if kind == b"T" and len(fields) == 1 and fields[0]:
            origin = fields[0].decode("utf-8")  # the key's name, which may be any UTF-8
            if not origin.isprintable():
                raise Damaged("an origin is printable")
            return Tree(origin)
        if kind == b"S" and len(fields) == 1:
            return Start(_number(fields[0]))
        if kind == b"B":
            if len(rest) > 1 << 16:
                raise Damaged("a break's facts are a few hundred bytes")
            try:
                facts = json.loads(rest)
            except RecursionError:  # nested thousands deep
                raise Damaged("a break's facts nest too deep") from None
            if not isinstance(facts, dict):
                raise Damaged("a break's facts are a JSON object")
            return Break(facts)
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, Damaged):
            raise
        raise Damaged(str(exc)) from None
    raise Damaged(f"not a record: {line[:40]!r}")


def _number(field: bytes) -> int:
    if not field.isdigit() or len(field) > 19 or (len(field) > 1 and field[:1] == b"0"):
        raise Damaged(f"not a number: {field[:24]!r}")
    return int(field)


def _b64(field: bytes) -> bytes:
    try:
        return base64.b64decode(field, validate=True)
    except (binascii.Error, ValueError):
        raise Damaged("not standard base64") from None


def record_at(fd: int, offset: int) -> Record | None:
    """The record of the line at ``offset`` (``None``: damaged, or none)."""
    for _, _, line in lines_from(fd, offset):
        try:
            return parse(line)
        except Damaged:
            return None
    return None


def lines_from(fd: int, offset: int, end: int | None = None) -> Iterator[tuple[int, int, bytes]]:
    """``(start, end, line)`` for each whole line of the file ``fd`` from ``offset`` (up to
    ``end``): where it starts, where the next begins, its bytes without the newline.

    A line longer than :data:`MAX_RECORD` is yielded as ``b""`` (damaged); a last
    piece without a newline is not yielded.
    """
    pending = b""
    start = offset
    skipping = False
    while end is None or offset < end:
        count = READ_CHUNK if end is None else min(READ_CHUNK, end - offset)
        chunk = os.pread(fd, count, offset)
        if not chunk:
            return
        offset += len(chunk)
        data = pending + chunk if pending else chunk
        position = 0
        while True:
            newline = data.find(b"\n", position)
            if newline < 0:
                break
            following = start + newline + 1 - position
            yield start, following, b"" if skipping else data[position:newline]
            skipping = False
            start = following
            position = newline + 1
        pending = data[position:]
        if len(pending) > MAX_RECORD:
            start += len(pending)
            pending, skipping = b"", True


def last_line_starting(fd: int, size: int, prefix: bytes) -> int | None:
    """The offset of the last line of the file that starts with ``prefix`` (``None``: none)."""
    if size and os.pread(fd, len(prefix), 0) == prefix:
        first: int | None = 0
    else:
        first = None
    needle = b"\n" + prefix
    end = size
    while end > 0:
        begin = max(0, end - READ_CHUNK)
        at = os.pread(fd, end - begin, begin).rfind(needle)
        if at >= 0:
            return begin + at + 1
        if begin == 0:
            break
        end = begin + len(needle) - 1  # a match across two chunks
    return first


class SidecarFile:
    """A sidecar open for reading what others appended and appending under the log's lock.

    ``offset`` is where the next read starts, a line's start; ``torn`` says the
    file ends in a piece without its newline (a crash or a full disk
    mid-record), to be ended before the next record.
    """

    def __init__(self, path: str, mode: int = 0o644) -> None:
        self.path = path
        self.mode = mode
        self.fd: int | None = None
        self.offset = 0
        self.size = 0  # as the last read found it
        self.torn = False

    def open(self, *, create: bool) -> int:
        """Open it (creating it, with its header, when ``create``); its size."""
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.path, flags | (os.O_CREAT if create else 0), self.mode)
        except OSError as exc:
            reason = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise OSError(exc.errno, f"cannot open the seal file {self.path!r}: {reason}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, f"the seal file {self.path!r} is not a regular file")
        if create and info.st_size == 0:
            os.fchmod(fd, self.mode)
        self.fd = fd
        return info.st_size

    def read_new(self) -> Iterator[tuple[bytes, Record | None]]:
        """Each line appended since the last read, and its record (``None``: damaged).

        A last piece without its newline is read again once a newline ends it.
        """
        assert self.fd is not None
        size = os.fstat(self.fd).st_size
        self.size = size
        for start, end, line in lines_from(self.fd, self.offset, size):
            self.offset = end
            if start == 0 and line + b"\n" == HEADER:
                continue
            try:
                yield line, parse(line)
            except Damaged:
                yield line, None
        self.torn = self.offset < size

    def append(self, data: bytes, *, reread: bool = False) -> None:
        """Append whole records, everything before read (the caller holds the lock).

        ``reread``: the next :meth:`read_new` reads them too, as another process's,
        even written in part (the sealer follows its own records so).
        """
        assert self.fd is not None
        if self.torn:
            data = b"\n" + data
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                size = os.fstat(self.fd).st_size
                self.torn = size > 0 and os.pread(self.fd, 1, size - 1) != b"\n"
            raise
        self.torn = False
        if not reread:
            self.offset = self.size = self.size + len(data)

    def sync(self) -> None:
        """fsync it."""
        assert self.fd is not None
        os.fsync(self.fd)

    def close(self) -> None:
        """Close it."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)
