"""``/v1/models``: what the registry holds and what is serving; admin promote and rollback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from recsys.registry import VersionInfo
from serving import deps
from serving.errors import documented
from serving.metrics import LOADED
from serving.schemas import ModelDetail, ModelSummary
from serving.state import ModelHolder

router = APIRouter(prefix="/v1", tags=["models"])
Holder = Annotated[ModelHolder, Depends(deps.holder)]


@router.get("/models", response_model=list[ModelSummary], responses=documented(503))
def list_models(holder: Holder) -> list[ModelSummary]:
    """Every registered version, its stage and headline metrics, and which one is serving."""
    return [_summary(info, holder) for info in holder.registry.list()]


@router.get("/models/{version}", response_model=ModelDetail, responses=documented(404, 422, 503))
def show_model(version: str, holder: Holder) -> ModelDetail:
    """One version's manifest (lineage, parameters, metrics, checksums)."""
    resolved = holder.registry.resolve(version)
    info = next(i for i in holder.registry.list() if i.version == resolved)
    manifest = holder.registry.manifest(resolved)
    return ModelDetail(**_summary(info, holder).model_dump(), manifest=manifest.model_dump(mode="json"))


@router.post(
    "/models/{version}/promote",
    response_model=ModelSummary,
    dependencies=[Depends(deps.require_admin)],
    responses=documented(403, 404, 409, 422, 503),
)
def promote(version: str, holder: Holder, force: bool = False) -> ModelSummary:
    """Make a version production (through the promotion gate unless ``force``) and serve it."""
    holder.registry.promote(version, force=force)
    _serve(holder, "production")
    production = holder.registry.resolve("production")
    return next(summary for summary in list_models(holder) if summary.version == production)


@router.post(
    "/rollback",
    response_model=ModelSummary,
    dependencies=[Depends(deps.require_admin)],
    responses=documented(403, 409, 422, 503),
)
def rollback(holder: Holder) -> ModelSummary:
    """Return production to the previous production version and serve it."""
    version = holder.registry.rollback()
    _serve(holder, version)
    return next(s for s in list_models(holder) if s.version == version)


def _serve(holder: ModelHolder, ref: str) -> None:
    previous = holder.current.version if holder.current else None
    current = holder.load(ref)
    if previous:
        LOADED.labels(model_version=previous).set(0)
    LOADED.labels(model_version=current.version).set(1)


def _summary(info: VersionInfo, holder: ModelHolder) -> ModelSummary:
    serving = info.version in holder.loaded_versions()
    share = sum(e.share for e in holder.plan.experiments if e.treatment == info.version and not e.paused)
    return ModelSummary(
        version=info.version,
        stage=info.stage.value,
        algorithm=holder.registry.manifest(info.version).algorithm,
        created_at=info.created_at.isoformat(),
        serving=serving,
        provider=holder.provider_of(info.version),
        rollout_share=min(share, 1.0),
        metrics=info.metrics,
    )
