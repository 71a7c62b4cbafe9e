"""The probes and metrics blueprint: ``/livez``, ``/readyz``, ``/healthz``, ``/metrics``.

Register it to expose them (``app.register_blueprint(probes.blueprint,
url_prefix="/internal")`` if you like); nothing is added to an app unasked. The
probes follow Kubernetes: ``/livez`` says whether the process should be
restarted, ``/readyz`` whether it should get traffic, and ``/healthz`` gives
the readiness status with the writer's figures. With several workers each
answers for itself; ``/metrics`` is the fleet view.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from .state import login_log, needs_login_audit

blueprint = Blueprint("login_audit_probes", __name__)


needs_login_audit(blueprint, "the probes")


def not_ready_because() -> list[str]:
    """Why the current app should get no traffic now; empty when it is ready."""
    log = login_log()
    settings = log.settings
    return log.writer.not_ready_because(
        settings.login_log_stall_seconds, settings.login_log_high_water
    )


@blueprint.get("/livez")
async def livez() -> tuple[str, int]:
    """200 while the writer task is alive; no dependency is checked."""
    alive = login_log().writer.alive
    return ("ok", 200) if alive else ("the login log writer is not running", 503)


@blueprint.get("/readyz")
async def readyz() -> tuple[str, int]:
    """200 when the app should get traffic, else 503 and why."""
    reasons = not_ready_because()
    return ("; ".join(reasons), 503) if reasons else ("ok", 200)


@blueprint.get("/healthz")
async def healthz() -> tuple[dict[str, Any], int]:
    """The readiness status with the writer's figures, as JSON."""
    reasons = not_ready_because()
    body = {"status": "unavailable" if reasons else "ok", "reasons": reasons}
    return {**body, **login_log().writer.stats()}, 503 if reasons else 200


@blueprint.get("/metrics")
async def metrics() -> Response:
    """The Prometheus metrics, in the text format."""
    return Response(login_log().metrics.exposition(), content_type="text/plain; version=0.0.4")
