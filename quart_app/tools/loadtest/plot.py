"""A PNG of the run: latency percentiles above, throughput below, per second."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from .summary import Summary

INSTALL_HINT = "--plot needs matplotlib: pip install 'quart_app[plot]'"
MIN_RATED_SPAN_S = 0.5


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> ModuleType:
    """Import matplotlib, or raise :class:`PlotUnavailable` saying how to install it.

    Imported here rather than at the top so that only ``--plot`` needs it; the
    CLI calls this before the run so a missing package is not found after it.
    """
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None
    return matplotlib


class BadPlotPath(ValueError):
    """A plot path that cannot be written: no such directory, or no format matplotlib draws."""


def check_plot_path(path: str | Path) -> None:
    """Raise :class:`BadPlotPath` unless ``path`` is a file matplotlib can draw into.

    Checked before the run, so that a typo does not lose the run after it.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    if path.is_dir():
        raise BadPlotPath(f"{str(path)!r} is a directory")
    formats = FigureCanvasAgg.get_supported_filetypes()
    suffix = path.suffix.lower().removeprefix(".")
    if not suffix:
        # matplotlib would add .png, and the summary name a file never written.
        raise BadPlotPath(f"needs a file name ending in .png (or {', '.join(formats)})")
    if suffix not in formats:
        raise BadPlotPath(f"cannot draw a .{suffix} file; formats: {', '.join(formats)}")
    directory = path.parent
    if not directory.is_dir():
        raise BadPlotPath(f"no directory {str(directory)!r}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BadPlotPath(f"cannot write in the directory {str(directory)!r}")


def plot_summary(summary: Summary, path: str | Path) -> None:
    """Draw ``summary``'s per-second latency and throughput into the PNG ``path``."""
    require_matplotlib()
    # The Agg canvas and Figure directly, not pyplot: no display needed, and no
    # global figure state left behind in a process that calls this in-process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    config = summary.config
    seconds = summary.seconds
    middles = [s.start_s + s.span_s / 2 for s in seconds]
    answered = [(m, s) for m, s in zip(middles, seconds, strict=True) if s.latency_ms]

    figure = Figure(figsize=(10, 7), layout="constrained")
    FigureCanvasAgg(figure)
    latency_axes, rate_axes = figure.subplots(2, 1, sharex=True)
    load = (
        f"concurrency {config.concurrency}"
        if summary.open_loop is None
        else f"{summary.open_loop.rate:,g}/s open loop, at most {config.concurrency} in flight"
    )
    figure.suptitle(
        f"{config.method.upper()} {config.target}: {load}, "
        f"{summary.requests:,} requests in {summary.duration_s:.1f} s, "
        f"{summary.rps:,.0f} answers/s"
    )

    for name, style in (("p99", "-"), ("p90", "--"), ("p50", ":")):
        latency_axes.plot(
            [m for m, _ in answered],
            [s.latency_ms[name] for _, s in answered],
            style,
            marker="o",
            markersize=3,
            label=name,
        )
    latency_axes.set_title(
        "Latency per second (completed responses"
        + ("; from each request's due time)" if summary.open_loop is not None else ")")
    )
    latency_axes.set_ylabel("latency (ms)")
    latency_axes.set_ylim(bottom=0)
    latency_axes.legend(loc="upper right")
    latency_axes.grid(alpha=0.3)

    # A last bucket of a few milliseconds (the requests in flight at the end
    # draining) would show a rate far off the rest: leave short ones out.
    rated = [s for s in seconds if s.span_s >= MIN_RATED_SPAN_S] or seconds
    rated_middles = [s.start_s + s.span_s / 2 for s in rated]
    rate_axes.plot(
        rated_middles, [s.throughput for s in rated], marker="o", markersize=3, label="all answers"
    )
    if any(s.failures for s in rated):
        rate_axes.plot(
            rated_middles,
            [s.failures / s.span_s for s in rated],
            color="tab:red",
            marker="x",
            markersize=4,
            label="non-200 answers + errors",
        )
    rate_axes.set_title("Throughput per second")
    rate_axes.set_ylabel("per second")
    rate_axes.set_xlabel("time since start (s)")
    rate_axes.set_ylim(bottom=0)
    rate_axes.set_xlim(left=0)
    rate_axes.legend(loc="lower right")
    rate_axes.grid(alpha=0.3)

    figure.savefig(path, dpi=100)
