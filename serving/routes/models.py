"""``/v1/models``: what the registry holds and what is serving (scope ``recommend`` or ``admin``);
promote and rollback (scope ``admin``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from recsys.access.scopes import Scope
from recsys.registry.store import VersionInfo
from serving import auth, deps
from serving.errors import documented
from serving.metrics import LOADED
from serving.schemas import ModelDetail, ModelSummary
from serving.state import ModelHolder

router = APIRouter(prefix="/v1", tags=["models"])
Holder = Annotated[ModelHolder, Depends(deps.holder)]
READ = [Scope.RECOMMEND, Scope.ADMIN]


@router.get(
    "/models",
    response_model=list[ModelSummary],
    dependencies=[Depends(auth.READ)],
    responses=documented(503, scopes=READ),
)
def list_models(holder: Holder) -> list[ModelSummary]:
    """Every registered version, its stage and headline metrics, and which one is serving."""
    return [_summary(info, holder) for info in holder.registry.list()]


@router.get(
    "/models/{version}",
    response_model=ModelDetail,
    dependencies=[Depends(auth.READ)],
    responses=documented(404, 422, 503, scopes=READ),
)
def show_model(version: str, holder: Holder) -> ModelDetail:
    """One version's manifest (lineage, parameters, metrics, checksums)."""
    resolved = holder.registry.resolve(version)
    info = next(i for i in holder.registry.list() if i.version == resolved)
    manifest = holder.registry.manifest(resolved)
    return ModelDetail(**_summary(info, holder).model_dump(), manifest=manifest.model_dump(mode="json"))


@router.post(
    "/models/{version}/promote",
    response_model=ModelSummary,
    dependencies=[Depends(auth.ADMIN)],
    responses=documented(404, 409, 422, 503, scopes=[Scope.ADMIN]),
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
    dependencies=[Depends(auth.ADMIN)],
    responses=documented(409, 422, 503, scopes=[Scope.ADMIN]),
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
