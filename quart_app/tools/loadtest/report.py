"""A run's summary as one JSON object, or as a few lines for people."""

from __future__ import annotations

import math
from typing import Any

from .schedule import LATE_TOLERANCE_NS
from .stats import encode
from .summary import OpenLoop, Summary
from .verify import VerifyResult

_INDENT = " " * 13


def _open_loop_dict(open_loop: OpenLoop) -> dict[str, Any]:
    return {
        "rate": {
            "target": open_loop.rate,
            "achieved": open_loop.achieved_rate,  # unrounded: 0.04/s is no 0.0
            "arrivals": open_loop.arrivals,
        },
        "late": {
            "count": open_loop.late,
            "tolerance_ms": LATE_TOLERANCE_NS / 1e6,
            "max_start_lag_ms": round(open_loop.max_start_lag_s * 1000, 3),
        },
        "dropped": open_loop.dropped,
        "unsent_at_end": open_loop.unsent,
        "service_time_ms": open_loop.service_ms(),
    }


def summary_dict(
    summary: Summary, verify: VerifyResult | None = None, verify_error: str | None = None
) -> dict[str, Any]:
    """The summary (and the verification, if any) as plain JSON-able values.

    ``verify_error`` says why the log could not be read to verify: ``verify``
    is then failed with it as its reason. In open loop ``latency_ms`` counts
    from each request's due time and ``service_time_ms`` from its send;
    ``histograms`` holds both, encoded.
    """
    config = summary.config
    open_loop = summary.open_loop
    histograms = {"latency_us": encode(summary.latency)}
    if open_loop is not None:
        histograms["service_time_us"] = encode(open_loop.service)
    data: dict[str, Any] = {
        "url": config.target,
        "method": config.method.upper(),
        "mode": "closed" if open_loop is None else "open",
        "concurrency": config.concurrency,
        "run_id": config.run_id,
        "username_prefix": config.stem,
        "requests": summary.requests,
        "statuses": {str(status): count for status, count in summary.statuses.items()},
        "errors": summary.error_count,
        "error_types": summary.errors,
        "resends_refused": summary.resends_refused,
        "duration_s": round(summary.duration_s, 3),
        "rps": summary.rps,
        "latency_ms": summary.latency_ms(),
        **(_open_loop_dict(open_loop) if open_loop is not None else {}),
        "histograms": histograms,
        "valid": summary.valid,
        "invalid_reason": summary.invalid_reason,
        "loop_lag_ms": summary.loop_lag.figures_ms(),
    }
    if verify is not None:
        data["verify"] = verify.to_dict()
    elif verify_error is not None:
        # A verification that could not be made failed: a reader of the JSON alone sees so.
        data["verify"] = {"ok": False, "reason": verify_error}
    return data


def _verify_lines(verify: VerifyResult) -> list[str]:
    verdict = "OK" if verify.ok else "FAILED"
    indent = _INDENT
    lines = [
        f"verify       {verdict}: {verify.acknowledged:,} acknowledged, "
        f"{verify.logged_once:,} logged once, {verify.missing:,} missing, "
        f"{verify.doubled:,} logged more often than sent "
        f"(waited {verify.waited_s:.2f} s, then settled {verify.settled_s:.2f} s)",
        f"{indent}{verify.unacknowledged_logged:,} unacknowledged logins logged (no fault)",
    ]
    if not verify.acknowledged:
        lines.append(f"{indent}nothing was acknowledged (no login answered 200)")
    if verify.unsent_logged:
        lines.append(f"{indent}{verify.unsent_logged:,} logged that this run never sent")
    if verify.unreadable:
        lines.append(f"{indent}{verify.unreadable:,} lines are no login record (torn writes?)")
    if verify.repeated_logged:
        lines.append(
            f"{indent}{verify.repeated_logged:,} sent more than once and logged as often (no fault)"
        )
    for name, examples in (
        ("missing", verify.missing_examples),
        ("doubled", verify.doubled_examples),
        ("never sent", verify.unsent_examples),
        ("unreadable", tuple(repr(line) for line in verify.unreadable_examples)),
    ):
        if examples:
            lines.append(f"{indent}{name} e.g. {', '.join(examples)}")
    return lines


def _figures(values: dict[str, float]) -> str:
    return "   ".join(f"{name} {value:.2f} ms" for name, value in values.items())


def _per_second(value: float) -> str:
    """Three significant digits, and all of a whole part: 0.001, 2.5, 200, 1,235.

    Never a fixed number of decimals, which shows a rate of 0.001/s as 0.0.
    """
    if not math.isfinite(value) or value <= 0:
        return f"{value:g}"
    decimals = max(0, 2 - math.floor(math.log10(value)))
    shown = f"{value:,.{decimals}f}"
    return shown.rstrip("0").rstrip(".") if decimals else shown


def _open_loop_lines(open_loop: OpenLoop) -> list[str]:
    tolerance_ms = LATE_TOLERANCE_NS / 1e6
    lines = [
        f"rate         target {_per_second(open_loop.rate)}/s ({open_loop.arrivals}), "
        f"achieved {_per_second(open_loop.achieved_rate)}/s",
        f"late         {open_loop.late:,} started over {tolerance_ms:g} ms after their due time "
        f"(largest start lag {open_loop.max_start_lag_s * 1000:,.2f} ms), "
        f"{open_loop.dropped:,} dropped",
    ]
    if open_loop.unsent:
        lines.append(f"{_INDENT}{open_loop.unsent:,} due but not sent when the duration was over")
    return lines


def summary_text(summary: Summary, verify: VerifyResult | None = None) -> str:
    """The summary for a terminal, one figure per line."""
    config = summary.config
    open_loop = summary.open_loop
    answered = "   ".join(f"{status}: {n:,}" for status, n in summary.statuses.items())
    errors = ", ".join(f"{name}: {n:,}" for name, n in summary.errors.items())
    latency = _figures(summary.latency_ms()) or "none answered"
    mode = (
        f"concurrency {config.concurrency}"
        if open_loop is None
        else f"open loop, at most {config.concurrency} in flight"
    )
    lines = [f"{config.method.upper()} {config.target}   {mode}"]
    lines.append(f"requests     {summary.requests:,} in {summary.duration_s:.2f} s")
    if open_loop is not None:
        lines += _open_loop_lines(open_loop)
    lines.append(f"answered     {answered or 'none'}")
    lines.append(f"errors       {summary.error_count:,}" + (f" ({errors})" if errors else ""))
    if summary.resends_refused:
        lines.append(
            f"{_INDENT}{summary.resends_refused:,} not resent after their connection dropped"
        )
    lines.append(f"throughput   {_per_second(summary.rps)} answers/s")
    if open_loop is None:
        lines.append(f"latency      {latency}")
    else:
        lines.append(f"latency      {latency}   (from the due time)")
        lines.append(f"service      {_figures(open_loop.service_ms()) or 'none answered'}")
    if lag := summary.loop_lag.figures_ms():
        lines.append(f"client lag   {_figures(lag)}")
    if summary.invalid_reason:
        lines.append(f"INVALID      {summary.invalid_reason}")
    if verify is not None:
        lines += _verify_lines(verify)
    return "\n".join(lines)
