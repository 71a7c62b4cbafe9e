"""Sealed logs in tests: a key, a log sealed in process, its seal file's records, and an
attacker's tools (re-hash a line, re-sign with a stolen key)."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from quart_app.records import LoginRecord
from quart_app.seal.certs import Checkpoint, records_digest
from quart_app.seal.merkle import CompactRange, leaf_hash
from quart_app.seal.note import Signer
from quart_app.seal.sidecar import one_line
from quart_app.seal.store import SealedStore
from quart_app.stores.file import FileStore

from .trail import Ran, run_log


@dataclass
class Sealed:
    """A key, its public half, a log and its seal file."""

    key: Path
    public: Path
    log: Path

    @property
    def seal(self) -> Path:
        return Path(f"{self.log}.seal")

    def verify(self, *logs: Path | str, extra: tuple[str, ...] = ()) -> Ran:
        """``quart-app-log verify --key PUBLIC LOGS...`` (the log itself when none given)."""
        return run_log("verify", "--key", self.public, *(logs or (self.log,)), *extra)

    def lines(self) -> list[bytes]:
        return self.log.read_bytes().split(b"\n")[:-1]

    def write_lines(self, lines: list[bytes]) -> None:
        self.log.write_bytes(b"".join(line + b"\n" for line in lines))

    def records(self) -> list[str]:
        return self.seal.read_text().split("\n")[:-1]


def make_key(directory: Path, name: str = "test/login-log") -> tuple[Path, Path]:
    """A signing key made by keygen in ``directory`` (created), and its ``.pub``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "key"
    made = run_log("keygen", key, "--name", name)
    assert made.status == 0, made.err
    return key, Path(f"{key}.pub")


async def seal_batches(
    sealed: Sealed,
    batches: list[list[str]],
    *,
    pause: float = 0.03,
    interval: float = 0.02,
    epoch: float = 0.1,
    between: object = None,
) -> None:
    """Serve the sealed store in process: append each batch of usernames, pausing between
    them (so that checkpoints and key changes fall between), then stop cleanly.

    ``between(index)`` runs after each batch, with the store open.
    """
    store = SealedStore(FileStore(str(sealed.log)), str(sealed.key), interval=interval, epoch=epoch)
    await store.open()
    try:
        for index, names in enumerate(batches):
            records = [LoginRecord(name, datetime.now(UTC), "203.0.113.7") for name in names]
            await store.write(store.prepare(records))
            await asyncio.sleep(pause)
            if callable(between):
                between(index)
    finally:
        await store.close()


def make_sealed(tmp_path: Path, batches: int = 12, per_batch: int = 4) -> Sealed:
    """A log of ``batches`` of ``per_batch`` lines, sealed over several epochs, stopped cleanly."""
    key, public = make_key(tmp_path / "keys")
    sealed = Sealed(key, public, tmp_path / "login_log.txt")
    names = [[f"user-{b}-{i}" for i in range(per_batch)] for b in range(batches)]
    asyncio.run(seal_batches(sealed, names))
    return sealed


def rehash(sealed: Sealed) -> None:
    """An attacker's step: make the seal file's leaf hashes those of the log as it is now."""
    hashes = [leaf_hash(line) for line in sealed.lines()]
    out, at = [], 0
    for record in sealed.records():
        if record.startswith("L "):
            _, index, end, data = record.split(" ")
            count = len(base64.b64decode(data)) // 32
            data = base64.b64encode(b"".join(hashes[at : at + count])).decode()
            at += count
            record = f"L {index} {end} {data}"
        out.append(record)
    sealed.seal.write_text("".join(line + "\n" for line in out))


def resign(sealed: Sealed, stolen: Signer) -> int:
    """An attacker's step: every checkpoint and key change ``stolen`` signed, signed again over
    the seal file's hashes as they are now (a key change's digest of the checkpoints before it
    made again too). Returns how many were re-signed."""
    tree = CompactRange()
    roots: dict[int, bytes] = {0: tree.root()}
    digest = records_digest()
    out, count = [], 0
    for record in sealed.records():
        if record.startswith("L "):
            for start in range(0, len(data := base64.b64decode(record.split(" ")[3])), 32):
                tree.append_hash(data[start : start + 32])
            roots[tree.size] = tree.root()
        elif record[:2] in ("C ", "K "):
            kind, note, *_ = record.split(" ")
            decoded = base64.b64decode(note).decode()
            body = Checkpoint.parse(decoded.split("\n\n")[0] + "\n")
            signature = base64.b64decode(decoded.split("\n\n")[1].split(" ")[-1])
            if signature[:4] == stolen.verifier.id and body.size in roots:
                forged = Checkpoint(
                    body.origin,
                    body.size,
                    roots[body.size],
                    body.next_key,
                    body.reason,
                    digest.digest() if kind == "K" else b"",
                )
                record = f"{kind} {one_line(stolen.sign(forged.text()))}"
                count += 1
            if kind == "C":
                digest.update(record.encode() + b"\n")
            else:
                digest = records_digest()
        out.append(record)
    sealed.seal.write_text("".join(line + "\n" for line in out))
    return count
