"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recsys.errors import ModelUnavailable
from serving import deps
from serving.errors import documented
from serving.metrics import REGISTRY
from serving.state import ModelHolder, Watcher

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses=documented(503, notes={503: "No verified model loaded yet, or the registry unreadable."}),
)
def readyz(request: Request, holder: ModelHolder = Depends(deps.holder)) -> dict[str, str]:
    """A verified model is loaded and the registry is being read (503 with Retry-After otherwise).

    A replica whose model watcher has failed to read the registry for
    ``RECSYS_REGISTRY_UNREADY_AFTER_CHECKS`` check intervals would miss a promotion, so it is
    taken out of the load balancer until the registry reads again.
    """
    if holder.current is None:
        raise ModelUnavailable("no verified model is loaded yet")
    watcher: Watcher | None = getattr(request.app.state, "watcher", None)
    if watcher is not None:
        watcher.ensure_readable()
    return {"status": "ready", "model_version": holder.current.version}


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
