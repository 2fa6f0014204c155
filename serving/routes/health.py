"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recsys.errors import ModelUnavailable
from serving import deps
from serving.metrics import REGISTRY
from serving.state import ModelHolder

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(holder: ModelHolder = Depends(deps.holder)) -> dict[str, str]:
    """A verified model is loaded (503 with Retry-After otherwise)."""
    if holder.current is None:
        raise ModelUnavailable("no verified model is loaded yet")
    return {"status": "ready", "model_version": holder.current.version}


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
