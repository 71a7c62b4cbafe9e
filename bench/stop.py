"""How long a stop takes to log the records it could not write: ``python -m bench.stop``.

A stop whose drain gave up logs every record left as a ``NOT CONFIRMED
WRITTEN`` line (``LogWriter.abandon``), within the margin hypercorn's
``shutdown_timeout`` keeps after the drain (``serving.DRAIN_MARGIN``). This
times that for the most records ``LOGIN_LOG_MAX_PENDING`` accepts, through the
app's own logger (Quart's handler, to a file standing in for stderr), and
prints the median of several rounds.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from quart import Quart

from quart_app.config import MAX_PENDING_LIMIT
from quart_app.serving import DRAIN_MARGIN
from quart_app.stores.file import FileStore
from quart_app.writer import LogWriter

from .writer import make_records


def time_abandon(records: int, rounds: int) -> list[float]:
    """Seconds ``abandon`` takes for ``records`` records, once per round."""
    many = make_records(records)
    with tempfile.TemporaryDirectory() as workdir:
        stderr = Path(workdir, "stderr")
        app = Quart("bench")
        handler = logging.FileHandler(stderr)
        app.logger.handlers[:] = [handler]
        writer = LogWriter(FileStore(str(Path(workdir, "log.txt"))), logger=app.logger)
        times = []
        for _ in range(rounds):
            stderr.write_bytes(b"")
            start = time.perf_counter()
            writer.abandon(many, "not written within the drain timeout of 15 s")
            handler.flush()
            times.append(time.perf_counter() - start)
            lines = stderr.read_text(encoding="utf-8").count("NOT CONFIRMED WRITTEN")
            if lines != records:
                raise RuntimeError(f"{lines} lines logged for {records} records")
        handler.close()
    return times


def main() -> None:
    """Time it and print the rounds and their median."""
    parser = argparse.ArgumentParser(prog="python -m bench.stop", description=__doc__)
    parser.add_argument("--records", type=int, default=MAX_PENDING_LIMIT)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times = time_abandon(args.records, args.rounds)
    print(f"logging {args.records:,} unconfirmed records at a stop, {args.rounds} rounds:")
    print("  " + ", ".join(f"{t:.3f}" for t in times) + " s")
    print(f"  median {statistics.median(times):.3f} s (margin: {DRAIN_MARGIN:g} s)")


if __name__ == "__main__":
    main()
