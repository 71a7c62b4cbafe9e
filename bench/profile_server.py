"""Where a target's server spends its CPU: py-spy on the hypercorn worker under wrk load.

Run from the repository root (py-spy: ``.venv/bin/pip install py-spy``; needs
ptrace rights, e.g. root or ``kernel.yama.ptrace_scope=0``)::

    .venv/bin/python -m bench.profile_server / login --duration 15

Each target (names as in ``bench/plan.py``) gets a fresh server, a warm-up, then
py-spy samples the serving process while wrk loads it. Costs are shown in CPU
microseconds per answered request, so targets compare directly: the difference
between ``login`` and ``/`` is what logging costs. The collapsed stacks are kept
(``profile-<target>.txt`` in ``--out``) for flamegraph.pl or speedscope.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from quart_app.tools.server import ROOT

from .load import Wrk, measure
from .plan import SERVERS, TARGETS
from .servers import start_servers

# The event loop itself (uvloop is C) shows up as time "in" Runner.run.
_LOOP_LEAF = "Runner.run (asyncio/runners.py)"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> tuple[str, str]:
    """``func (path:line)`` -> (``func (path)``, group): the package, or ``stdlib <module>``."""
    match = _FRAME.match(frame)
    if not match:
        return frame, "other"
    func, path = match["func"], match["path"]
    # py-spy already shortens paths to site-packages or stdlib relative ones;
    # absolute paths are left for the project's own files.
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    for project_dir in ("quart_app", "bench"):
        if f"/{project_dir}/" in path:
            path = project_dir + "/" + path.rsplit(f"/{project_dir}/", 1)[1]
    path = re.split(r"/lib/python3\.\d+/", path, maxsplit=1)[-1]
    top = path.split("/", 1)[0].removesuffix(".py")
    group = f"stdlib {top}" if top in sys.stdlib_module_names else top
    return f"{func} ({path})", group


def analyse(raw: Path, requests: int, rate: int) -> dict[str, Counter[str]]:
    """Self time per group and per function, inclusive time per function, in us/request."""
    per_sample = 1e6 / rate / max(requests, 1)
    groups: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        cost = int(count) * per_sample
        leaf, group = frames[-1]
        if leaf == _LOOP_LEAF:
            group = "event loop (uvloop C code, syscalls)"
        groups[group] += cost
        self_time[leaf] += cost
        for name in {name for name, _ in frames}:
            inclusive[name] += cost
    return {"groups": groups, "self": self_time, "inclusive": inclusive}


def profile_target(
    name: str, wrk: Wrk, duration: float, rate: int, out: Path, py_spy: str, workdir: Path
) -> tuple[dict[str, Counter[str]], int, float]:
    """Profile one target on a fresh server; return the analysis, requests and req/s."""
    target = next(t for t in TARGETS if t.name == name)
    spec = next(s for s in SERVERS if s.key == target.server)
    raw = out / f"profile-{'root' if name == '/' else name.replace(' ', '')}.txt"
    with start_servers([spec], workdir) as servers:
        running = servers[spec.key]
        asyncio.run(measure(wrk, [(running, target)], "profile-warmup", 2))
        pid = (running.server.workers() or [running.server.processes()[0]])[0].pid
        command = [
            py_spy, "record", "--pid", str(pid), "--rate", str(rate),
            "--duration", str(round(duration) + 2), "--format", "raw", "--output", str(raw),
            "--gil",
        ]  # fmt: skip
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1)  # let py-spy attach; idle samples are not recorded anyway
        [result] = asyncio.run(measure(wrk, [(running, target)], "profile", duration))
        _, err = spy.communicate(timeout=duration + 60)
    if spy.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed (needs ptrace rights):\n{err.decode(errors='replace')}")
    return analyse(raw, result.answered, rate), result.answered, result.rps


def main(argv: Sequence[str] | None = None) -> int:
    """Profile the named targets and print their costs side by side."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", choices=[t.name for t in TARGETS])
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        sys.exit("py-spy not found: .venv/bin/pip install py-spy")
    gen = Wrk(1, args.concurrency)
    args.out.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict[str, Counter[str]]] = {}
    with tempfile.TemporaryDirectory(prefix="quart-profile-") as tmp:
        for name in args.targets:
            analysis, requests, rps = profile_target(
                name, gen, args.duration, args.rate, args.out, py_spy, Path(tmp)
            )
            results[name] = analysis
            total = sum(analysis["groups"].values())
            print(f"{name}: {requests} requests, {rps:.0f} req/s under py-spy, "
                  f"{total:.0f} us CPU sampled per request")  # fmt: skip

    names = list(results)

    def table(kind: str, title: str, keys: list[str]) -> None:
        print(f"\n{title} (CPU us per request)")
        print("".join(f"{n:>10}" for n in names) + "  " + ("diff  " if len(names) > 1 else ""))
        for key in keys:
            values = [results[n][kind].get(key, 0.0) for n in names]
            diff = f"{values[-1] - values[0]:+6.1f}  " if len(names) > 1 else ""
            print("".join(f"{v:10.1f}" for v in values) + "  " + diff + key)

    groups = {g for r in results.values() for g in r["groups"]}
    biggest = sorted(groups, key=lambda g: -max(r["groups"].get(g, 0) for r in results.values()))
    table("groups", "Self time by package", biggest)
    last = results[names[-1]]
    # Sorted by how much more the last target spends than the first: what it adds.
    base = results[names[0]]
    adds = sorted(last["self"], key=lambda f: -(last["self"][f] - base["self"].get(f, 0)))
    table("self", f"Functions by self time, sorted by what {names[-1]} adds", adds[: args.top])
    ours = [f for f, _ in last["inclusive"].most_common() if "quart_app/" in f or "bench/" in f]
    table("inclusive", "The project's functions, inclusive", ours[: args.top])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
