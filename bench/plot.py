"""The chart: req/s and server CPU per target, and the writer alone, with the goals drawn in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .plan import GOALS, TARGETS


def plot(report: dict[str, Any], path: Path) -> None:
    """Draw ``report`` into the PNG ``path`` (needs matplotlib, the ``plot`` extra)."""
    # The Agg canvas and Figure directly: no display and no global pyplot state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    http, writer = report["summary"]["http"], report["summary"]["writer"]
    figure = Figure(figsize=(16, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    rps_axes, cpu_axes, writer_axes = figure.subplots(1, 3)
    names = [t.name for t in TARGETS if t.name in http]
    for axes, key, label in (
        (rps_axes, "rps", "requests/s (median of rounds)"),
        (cpu_axes, "cpu_us_per_request", "server CPU µs per request (median)"),
    ):
        values = [http[n][key] for n in names]
        axes.bar(range(len(names)), values, color="#1f77b4")
        for i, value in enumerate(values):
            axes.annotate(f"{value:,.0f}", (i, value), ha="center", va="bottom", fontsize=8)
        axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
        axes.set_ylabel(label)
        _draw_goals(axes, "rps" if key == "rps" else "cpu", http, key, names)
    rps_axes.set_title("Throughput")
    cpu_axes.set_title("Server CPU per request")

    writers = list(writer)
    rates = [writer[n]["per_second"] for n in writers]
    writer_axes.bar(range(len(writers)), rates, color="#2ca02c")
    writer_axes.set_yscale("log")
    for i, rate in enumerate(rates):
        writer_axes.annotate(f"{rate:,.0f}/s", (i, rate), ha="center", va="bottom", fontsize=8)
    writer_axes.set_xticks(range(len(writers)), writers)
    writer_axes.set_ylabel("records/s, log scale (median)")
    writer_axes.set_title("Writer alone")

    info = report["machine"]
    figure.suptitle(
        f"quart_app login log: {info['cores']} cores {info['cpu']}, Python {info['python']}, "
        f"{info['load_generator']}, {report['date']}",
        fontsize=10,
    )
    figure.savefig(path, dpi=100)


def _draw_goals(axes: Any, metric: str, http: dict, key: str, names: list[str]) -> None:
    # A goal against a measured reference is a line at threshold x the reference.
    for goal in GOALS:
        if goal.metric != metric or goal.reference not in http or goal.target not in names:
            continue
        level = goal.threshold * http[goal.reference][key]
        x = names.index(goal.target)
        axes.hlines(level, x - 0.45, x + 0.45, colors="#d62728", linestyles="--")
        axes.annotate(
            f"goal {goal.comparison} {goal.threshold:g}x {goal.reference}",
            (x, level),
            ha="center",
            va="bottom" if goal.at_least else "top",
            fontsize=7,
            color="#d62728",
        )
