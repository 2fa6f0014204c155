"""``/v1/rollout``: the A/B plan every replica serves (scope ``recommend`` or ``admin``); admin changes it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from recsys.access.scopes import Scope
from recsys.registry.plan import Experiment, RolloutPlan
from serving import auth, deps
from serving.bodies import JsonRoute
from serving.errors import documented
from serving.schemas import HoldoutRequest
from serving.state import ModelHolder

router = APIRouter(prefix="/v1", tags=["rollout"], route_class=JsonRoute)
Holder = Annotated[ModelHolder, Depends(deps.holder)]


@router.get(
    "/rollout",
    response_model=RolloutPlan,
    dependencies=[Depends(auth.READ)],
    responses=documented(503, scopes=[Scope.RECOMMEND, Scope.ADMIN]),
)
def get_plan(holder: Holder) -> RolloutPlan:
    """The plan this replica serves."""
    return holder.plan


@router.put(
    "/rollout",
    response_model=RolloutPlan,
    dependencies=[Depends(auth.ADMIN)],
    responses=documented(404, 413, 415, 422, 503, scopes=[Scope.ADMIN]),
)
def put_experiment(experiment: Experiment, holder: Holder) -> RolloutPlan:
    """Start an experiment or change its share (e.g. 1% → 2%); stored in the registry for every replica.

    ``mode`` is ``ab`` (default: an A/B test with a control slice) or ``interleave``: each user in
    the share gets one list merged from the treatment's and production's (variant
    ``NAME:interleave``, every item naming the version that contributed it), the rollout's first
    rung before A/B at 1%.
    """
    holder.registry.set_experiment(experiment)
    holder.refresh_plan()
    return holder.plan


@router.put(
    "/rollout/holdout",
    response_model=RolloutPlan,
    dependencies=[Depends(auth.ADMIN)],
    responses=documented(413, 415, 422, 503, scopes=[Scope.ADMIN]),
)
def put_holdout(body: HoldoutRequest, holder: Holder) -> RolloutPlan:
    """Hold a share of users out of personalisation: they get popular tracks (variant ``holdout``)."""
    holder.registry.set_holdout(body.share)
    holder.refresh_plan()
    return holder.plan


@router.delete(
    "/rollout/{name}",
    response_model=RolloutPlan,
    dependencies=[Depends(auth.ADMIN)],
    responses=documented(422, 503, scopes=[Scope.ADMIN]),
)
def stop_experiment(name: str, holder: Holder) -> RolloutPlan:
    """End an experiment: its users go back to production."""
    holder.registry.stop_experiment(name)
    holder.refresh_plan()
    return holder.plan
