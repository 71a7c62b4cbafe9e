"""The figures of a run: medians per target, the goals' verdicts, the Markdown page."""

from __future__ import annotations

import statistics
import textwrap
from collections import defaultdict
from typing import Any

from .plan import GOALS, MIN_ROUNDS, TARGETS, WRITERS, Goal


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _http_value(metric: str, m: dict[str, Any]) -> float:
    if metric == "cpu":
        return 1e6 * m["server_cpu_s"] / max(m["answered"], 1)
    if metric == "db":
        return 1e6 * m["database_cpu_s"] / max(m["answered"], 1)
    return float(m[metric])


def goal_ratios(raw: dict[str, list[dict[str, Any]]], goal: Goal) -> list[float]:
    """The goal's ratio in each round: of the two sides of its pair, loaded at the same time."""
    if goal.metric == "writer":
        rates: dict[str, dict[int, float]] = defaultdict(dict)
        for m in raw["writer"]:
            rates[m["writer"]][m["round"]] = m["records"] / m["seconds"]
        target, reference = rates[goal.target], rates[goal.reference]
        return [target[r] / reference[r] for r in sorted(target) if reference.get(r)]
    pair = f"{goal.target} vs {goal.reference}"
    sides: dict[int, dict[str, float]] = defaultdict(dict)
    for m in raw["http"]:
        if m.get("pair") == pair:
            sides[m["round"]][m["target"]] = _http_value(goal.metric, m)
    return [
        side[goal.target] / side[goal.reference]
        for _, side in sorted(sides.items())
        if side.get(goal.reference) and goal.target in side
    ]


def summarize(raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians (and ranges) per HTTP target and per writer, and each goal's verdict."""
    http = {}
    for target in TARGETS:
        runs = [m for m in raw["http"] if m["target"] == target.name]
        if not runs:
            continue
        rps = [m["rps"] for m in runs]
        http[target.name] = {
            "rps": _median(rps),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "p50": _median([m["p50"] for m in runs]),
            "p99": _median([m["p99"] for m in runs]),
            "cpu_us_per_request": _median([_http_value("cpu", m) for m in runs]),
            "db_cpu_us_per_request": _median([_http_value("db", m) for m in runs]),
            "answered": sum(m["answered"] for m in runs),
            "logged": sum(m["logged"] for m in runs),
            "doubled": sum(m["doubled"] for m in runs),
            "errors": sum(m["errors"] for m in runs),
            "others": _median([m["others"] for m in runs]),
        }
    writer = {}
    for name in WRITERS:
        runs_w = [m for m in raw["writer"] if m["writer"] == name]
        if runs_w:
            rates = [m["records"] / m["seconds"] for m in runs_w]
            writer[name] = {
                "records": runs_w[0]["records"],
                "per_second": _median(rates),
                "per_second_min": min(rates),
                "per_second_max": max(rates),
            }
    goals = []
    for goal in GOALS:
        ratios = goal_ratios(raw, goal)
        ratio = _median(ratios) if ratios else None
        judged = ratio is not None and len(ratios) >= MIN_ROUNDS
        goals.append(
            {
                "goal": goal.label,
                "ratio": ratio,
                "comparison": goal.comparison,
                "threshold": goal.threshold,
                "passed": goal.passed(ratio) if judged else None,
                "round_ratios": ratios,
            }
        )
    return {"http": http, "writer": writer, "goals": goals}


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    """The results page: the machine, the HTTP table, the writer table, the goals."""
    info, args, summary = report["machine"], report["args"], report["summary"]
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    bullets = [
        f"- **Machine:** {info['cores']} cores, {info['cpu']}, {info['os']}; Python "
        f"{info['python']}; {packages}; {info['load_generator']} on the same machine",
        f"- **Command:** `{report['command']}`",
        f"- **Date:** {report['date']}",
        f"- **Method:** {args['rounds']} rounds; in each, the two sides of every goal's pair "
        f"loaded at the same time on twin servers sharing one core, {args['duration']:g} s, "
        f"{args['concurrency']} connections each; figures are medians of every measurement, "
        "goals the median of the per-round ratios of their pair.",
    ]
    lines = ["# Login log benchmark", ""] + [_wrapped(b, "  ") for b in bullets] + [""]
    http = summary["http"]
    if http:
        ceiling = http.get("/", {}).get("rps")
        lines += [
            "| target | req/s (min-max) | vs `/` | p50 ms | p99 ms | CPU µs | DB µs "
            "| logged/answered | others |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for target in TARGETS:
            s = http.get(target.name)
            if not s:
                continue
            versus = f"{s['rps'] / ceiling:.2f}x" if ceiling else "n/a"
            logged = f"{s['logged']:,} / {s['answered']:,}" if target.login else "-"
            lines.append(
                f"| {target.name} | {_fmt(s['rps'])} ({_fmt(s['rps_min'])}-"
                f"{_fmt(s['rps_max'])}) | {versus} | {_fmt(s['p50'], 1)} | {_fmt(s['p99'], 1)} "
                f"| {_fmt(s['cpu_us_per_request'])} | {_fmt(s['db_cpu_us_per_request'])} "
                f"| {logged} | {s['others']:.2f} |"
            )
        lines += [
            "",
            _wrapped(
                "CPU µs and DB µs: the server's and the database's CPU time per answered "
                "request; others: cores used meanwhile by other processes than the servers, "
                "the database and wrk (noise). The targets:"
            ),
            "",
            *(_wrapped(f"- {t.name}: {t.what}", "  ") for t in TARGETS if t.name in http),
            "",
        ]
    writer = summary["writer"]
    if writer:
        lines += ["| writer alone | records | records/s (min-max) | vs its ceiling |"]
        lines += ["|---|--:|--:|--:|"]
        for name in WRITERS:
            s = writer.get(name)
            if s:
                # A file writer against os.write, a database one against the plain insert.
                top = "unnest insert" if name in ("LogWriter pg", "unnest insert") else "os.write"
                ceiling = writer.get(top, {}).get("per_second")
                versus = f"{s['per_second'] / ceiling:.2f}x" if ceiling else "n/a"
                lines.append(
                    f"| {name} | {s['records']:,} | {_fmt(s['per_second'])} "
                    f"({_fmt(s['per_second_min'])}-{_fmt(s['per_second_max'])}) | {versus} |"
                )
        lines += [
            "",
            *(_wrapped(f"- {n}: {how}", "  ") for n, how in WRITERS.items() if n in writer),
            "",
        ]
    lines += [
        "| goal | ratio | target | verdict | per round (min-max) |",
        "|---|--:|--:|---|--:|",
    ]
    for g in summary["goals"]:
        verdict = {True: "met", False: "**not met**"}.get(g["passed"], "not measured")
        if g["passed"] is None and g["round_ratios"]:
            verdict = f"no verdict: {len(g['round_ratios'])} of {MIN_ROUNDS} rounds"
        spread = (
            f"{min(g['round_ratios']):.2f}-{max(g['round_ratios']):.2f}"
            if g["round_ratios"]
            else "n/a"
        )
        lines.append(
            f"| {g['goal']} | {_fmt(g['ratio'], 2)} | {g['comparison']} {g['threshold']:g} "
            f"| {verdict} | {spread} |"
        )
    probes = [m["probe_ms"] for m in report["raw"]["http"]]
    if probes:
        lines += [
            "",
            _wrapped(
                f"A fixed pure-Python loop run before each measurement took {min(probes):.1f}-"
                f"{max(probes):.1f} ms (median {statistics.median(probes):.1f}): the machine's "
                "speed varied that much during the run."
            ),
        ]
    return "\n".join(lines) + "\n"


def _wrapped(text: str, indent: str = "") -> str:
    # Lines of at most 100 columns, as every Markdown page of the repository.
    return textwrap.fill(text, 100, subsequent_indent=indent, break_on_hyphens=False)
