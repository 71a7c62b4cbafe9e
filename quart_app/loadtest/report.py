"""A run's summary as one JSON object, or as a few lines for people."""

from __future__ import annotations

from typing import Any

from .stats import encode
from .summary import Summary
from .verify import VerifyResult


def summary_dict(summary: Summary, verify: VerifyResult | None = None) -> dict[str, Any]:
    """The summary (and the verification, if any) as plain JSON-able values."""
    config = summary.config
    data: dict[str, Any] = {
        "url": config.target,
        "method": config.method.upper(),
        "concurrency": config.concurrency,
        "run_id": config.run_id,
        "username_prefix": config.stem,
        "requests": summary.requests,
        "statuses": {str(status): count for status, count in summary.statuses.items()},
        "errors": summary.error_count,
        "error_types": summary.errors,
        "resends_refused": summary.resends_refused,
        "duration_s": round(summary.duration_s, 3),
        "rps": round(summary.rps, 1),
        "latency_ms": summary.latency_ms(),
        "histograms": {"latency_us": encode(summary.latency)},
        "valid": summary.valid,
        "invalid_reason": summary.invalid_reason,
        "loop_lag_ms": summary.loop_lag.figures_ms(),
    }
    if verify is not None:
        data["verify"] = verify.to_dict()
    return data


def _verify_lines(verify: VerifyResult) -> list[str]:
    verdict = "OK" if verify.ok else "FAILED"
    indent = " " * 13
    lines = [
        f"verify       {verdict}: {verify.acknowledged:,} acknowledged, "
        f"{verify.logged_once:,} logged once, {verify.missing:,} missing, "
        f"{verify.doubled:,} logged more often than sent (waited {verify.waited_s:.2f} s)",
        f"{indent}{verify.unacknowledged_logged:,} unacknowledged logins logged (no fault)",
    ]
    if not verify.acknowledged:
        lines.append(f"{indent}nothing was acknowledged (no login answered 200)")
    if verify.unsent_logged:
        lines.append(f"{indent}{verify.unsent_logged:,} logged that this run never sent")
    if verify.repeated_logged:
        lines.append(
            f"{indent}{verify.repeated_logged:,} sent more than once and logged as often (no fault)"
        )
    for name, examples in (
        ("missing", verify.missing_examples),
        ("doubled", verify.doubled_examples),
        ("never sent", verify.unsent_examples),
    ):
        if examples:
            lines.append(f"{indent}{name} e.g. {', '.join(examples)}")
    return lines


def summary_text(summary: Summary, verify: VerifyResult | None = None) -> str:
    """The summary for a terminal, one figure per line."""
    config = summary.config
    answered = "   ".join(f"{status}: {n:,}" for status, n in summary.statuses.items())
    errors = ", ".join(f"{name}: {n:,}" for name, n in summary.errors.items())
    latency = summary.latency_ms()
    lines = [
        f"{config.method.upper()} {config.target}   concurrency {config.concurrency}",
        f"requests     {summary.requests:,} in {summary.duration_s:.2f} s",
        f"answered     {answered or 'none'}",
        f"errors       {summary.error_count:,}" + (f" ({errors})" if errors else ""),
        *(
            [f"             {summary.resends_refused:,} not resent after their connection dropped"]
            if summary.resends_refused
            else []
        ),
        f"throughput   {summary.rps:,.1f} answers/s",
        "latency      "
        + (
            "   ".join(f"{name} {value:.2f} ms" for name, value in latency.items())
            if latency
            else "none answered"
        ),
    ]
    lag = summary.loop_lag.figures_ms()
    if lag:
        lines.append("client lag   " + "   ".join(f"{k} {v:.2f} ms" for k, v in lag.items()))
    if summary.invalid_reason:
        lines.append(f"INVALID      {summary.invalid_reason}")
    if verify is not None:
        lines += _verify_lines(verify)
    return "\n".join(lines)
