"""How fast ``quart-app-log verify`` checks a sealed log (issue 18: at least 500,000 lines/s).

``python -m bench.verify [--lines N] [--rounds R] [--batch B] [--per-checkpoint C]
[--profile]``

Builds a sealed log of N lines (default 2,000,000) by driving the real sealing
code in process: the seed's text lines (``登录日志:用户名:…,登录时间:…,ip地址:…``)
appended by a :class:`~quart_app.stores.file.FileStore` wrapped in a
:class:`~quart_app.seal.store.SealedStore`, B records per batch (a batch is
an ``L`` record of the sidecar, as the server at full speed writes some 150
per batch) and a checkpoint every C lines (the sealer's tick, one simulated
second each: a server logging 2,000 logins a second; the key changes every
900 of them, as the default epoch has it). Then, R rounds each, with the log
warm in the page cache:

- ``verify()`` in process (``quart_app.seal.verify``): lines per second;
- the whole command, ``quart-app-log verify --key KEY.pub LOG``, Python's
  start included;
- the floor: the same lines read in 1 MiB chunks, split and hashed
  (``hashlib.sha256(b"\\x00" + line).digest()`` each), nothing else.

``--profile`` adds where verify's time goes: its stages timed alone, and
cProfile's functions by their own time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import hashlib
import io
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from quart_app.records import LoginRecord
from quart_app.seal import verify as verify_module
from quart_app.seal.merkle import CompactRange
from quart_app.seal.note import Verifier
from quart_app.seal.sidecar import SidecarFile, sidecar_path
from quart_app.seal.store import SealedStore
from quart_app.stores.file import FileStore
from quart_app.tools.log.keygen import keygen
from quart_app.trail.files import CHUNK

GOAL = 500_000
"""Lines per second verify must check (issue 18)."""

BIN = Path(sys.executable).parent

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"


def usernames(count: int, rng: random.Random) -> list[str]:
    """A pool of names: Chinese ones, and ASCII ones as people choose them."""
    names = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            names.append(rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.randint(1, 2))))
        elif kind == 1:
            names.append(f"{rng.choice(['zhang', 'li', 'wang', 'chen'])}.{rng.randint(1, 9999)}")
        else:
            names.append(f"user{rng.randint(1, 10**6):06d}@example.com")
    return names


def addresses(count: int, rng: random.Random) -> list[str]:
    """A pool of client addresses, a few of them IPv6."""
    out = []
    for i in range(count):
        if i % 20 == 0:
            out.append(f"2001:db8:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}")
        else:
            out.append(f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
    return out


async def build(
    directory: Path, lines: int, batch: int, per_checkpoint: int
) -> tuple[Path, Path, float]:
    """A sealed log of ``lines`` lines in ``directory``: its path, the verifier key's path,
    and the seconds it took."""
    rng = random.Random(18)
    names, ips = usernames(10_000, rng), addresses(5_000, rng)
    key = directory / "keys" / "key"
    key.parent.mkdir()
    keygen(key, "bench/login-log", io.StringIO())
    log = directory / "login.log"
    # The background sealer is left asleep: the checkpoints come at simulated seconds.
    store = SealedStore(FileStore(str(log)), str(key), interval=1e9, epoch=900.0)
    store.sealer.stderr = io.StringIO()  # not the terminal: the copies of the checkpoints
    started = time.perf_counter()
    await store.open()
    clock = time.monotonic()
    first = datetime(2026, 12, 1, tzinfo=UTC)
    step = timedelta(seconds=1 / per_checkpoint)  # per_checkpoint logins a second
    written, seconds = 0, 0
    while written < lines:
        count = min(batch, lines - written)
        records = [
            LoginRecord(
                names[(i * 7919) % len(names)], first + i * step, ips[(i * 104729) % len(ips)]
            )
            for i in range(written, written + count)
        ]
        await store.write(store.prepare(records))
        written += count
        if written // per_checkpoint > seconds:
            seconds = written // per_checkpoint
            await asyncio.to_thread(store.sealer.tick, now=clock + seconds)
    await store.close()  # the clean stop: everything signed, the key changed
    return log, Path(f"{key}.pub"), time.perf_counter() - started


def verify_in_process(log: Path, key: Path) -> verify_module.Report:
    """``verify`` as the command calls it."""
    verifier = Verifier.parse(key.read_text())
    return verify_module.verify([str(log)], sidecar_path(str(log)), [verifier])


def verify_command(log: Path, key: Path) -> None:
    """``quart-app-log verify``, which must exit 0."""
    command = [str(BIN / "quart-app-log"), "verify", "--key", str(key), str(log)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}")


def hash_lines(log: Path) -> int:
    """The floor: every line's leaf hash, and nothing else; the lines hashed."""
    sha256 = hashlib.sha256
    count = 0
    rest = b""
    with open(log, "rb") as file:
        while chunk := file.read(CHUNK):
            pieces = (rest + chunk).split(b"\n")
            rest = pieces.pop()
            for piece in pieces:
                sha256(b"\x00" + piece).digest()
            count += len(pieces)
    return count


def timed(action: Callable[[], object], rounds: int) -> list[float]:
    """Seconds ``action`` took, each round."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def stages(log: Path, batch: int) -> list[tuple[str, float]]:
    """Each part of verify's work alone, in seconds: where its time goes."""
    out = []
    started = time.perf_counter()
    lines = verify_module._Lines([str(log)], verify_module.Report())
    lines.open(0)
    while lines.take(batch):  # as _leaves takes them: an L record's count at a time
        pass
    out.append(
        ("leaf hashes of the log (_leaf_hashes, _Lines.take)", time.perf_counter() - started)
    )
    started = time.perf_counter()
    sidecar = SidecarFile(sidecar_path(str(log)))
    sidecar.open(create=False)
    assert sidecar.fd is not None
    chunks = list(verify_module._sidecar_chunks(sidecar.fd, verify_module.Report()))
    sidecar.close()
    out.append(("seal file read in chunks (_sidecar_chunks)", time.perf_counter() - started))
    started = time.perf_counter()
    hashes = [
        base64.b64decode(line.split(b" ")[3])
        for lines in chunks
        for line in lines
        if line[:2] == b"L "
    ]
    out.append(("leaf hashes of the L lines decoded", time.perf_counter() - started))
    started = time.perf_counter()
    tree = CompactRange()
    for chunk in hashes:
        tree.extend(chunk)
    out.append(("leaves folded (CompactRange.extend, per L line)", time.perf_counter() - started))
    return out


def profile(log: Path, key: Path, top: int = 20) -> str:
    """cProfile's functions by their own time, over one verify."""
    profiler = cProfile.Profile()
    profiler.enable()
    verify_in_process(log, key)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Build the log, time verify and the floor, print the medians."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.verify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--lines", type=int, default=2_000_000, help="N (default 2,000,000)")
    parser.add_argument("--rounds", type=int, default=5, help="R (default 5)")
    parser.add_argument("--batch", type=int, default=150, help="records per batch (150)")
    parser.add_argument(
        "--per-checkpoint", type=int, default=2000, help="lines per checkpoint (2000)"
    )
    parser.add_argument("--profile", action="store_true", help="where verify's time goes")
    args = parser.parse_args(argv)
    if min(args.lines, args.rounds, args.batch, args.per_checkpoint) < 1:
        parser.error("--lines, --rounds, --batch and --per-checkpoint must be at least 1")
    with tempfile.TemporaryDirectory(prefix="quart-verify-") as tmp:
        log, key, took = asyncio.run(build(Path(tmp), args.lines, args.batch, args.per_checkpoint))
        size = os.path.getsize(log)
        seal_size = os.path.getsize(sidecar_path(str(log)))
        report = verify_in_process(log, key)
        [tree] = report.trees
        if not report.ok or tree.lines != args.lines or tree.sealed != args.lines:
            raise RuntimeError(f"the log built does not verify: {report}")
        print(
            f"built {args.lines:,} lines ({size / 1e6:.0f} MB; seal file {seal_size / 1e6:.1f} MB"
            f", {tree.checkpoints:,} checkpoints, {len(tree.keys):,} key changes) in {took:.1f} s",
            flush=True,
        )
        results = {}
        for name, action in (
            ("verify() in process", lambda: verify_in_process(log, key)),
            ("quart-app-log verify", lambda: verify_command(log, key)),
            ("sha256 per line alone", lambda: hash_lines(log)),
        ):
            times = timed(action, args.rounds)
            results[name] = args.lines / statistics.median(times)
            rounds = ", ".join(f"{t:.2f}" for t in times)
            print(
                f"{name}: {rounds} s; median {statistics.median(times):.2f} s: "
                f"{results[name]:,.0f} lines/s",
                flush=True,
            )
        best = results["verify() in process"]
        floor = results["sha256 per line alone"]
        verdict = "met" if results["quart-app-log verify"] >= GOAL else "NOT MET"
        print(
            f"verify: {best / floor:.2f}x the hashing floor; the command "
            f"{results['quart-app-log verify']:,.0f} lines/s against the goal {GOAL:,}: {verdict}"
        )
        if args.profile:
            print("\nverify's stages, each alone:")
            for name, seconds in stages(log, args.batch):
                print(f"  {name}: {seconds:.2f} s ({args.lines / seconds:,.0f} lines/s)")
            print("\ncProfile, one verify (the profiler slows Python calls):")
            print(profile(log, key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
