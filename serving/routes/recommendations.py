"""``POST /v1/recommendations`` and ``GET /v1/tracks/{track_id}/similar``."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from recsys.access.scopes import Scope
from recsys.events.impressions import Impression
from recsys.events.schemas import UserUpdate
from recsys.experiments.assignment import Assignment
from recsys.experiments.interleaving import Interleaved, team_draft
from recsys.registry.plan import CONTROL, HOLDOUT
from recsys.scoring.recommender import MAX_K, Recommendations, VersionRecommender
from recsys.scoring.recommender import Query as PlaylistQuery
from serving import auth, deps
from serving.bodies import JsonRoute
from serving.errors import documented
from serving.metrics import FALLBACKS
from serving.schemas import (
    RecommendationRequest,
    RecommendationResponse,
    RecommendedTrack,
    SimilarTracksResponse,
)
from serving.state import ModelHolder

router = APIRouter(
    prefix="/v1", tags=["recommendations"], route_class=JsonRoute, dependencies=[Depends(auth.RECOMMEND)]
)
POPULARITY = "fallback:popularity"


@router.post(
    "/recommendations",
    response_model=RecommendationResponse,
    responses=documented(413, 415, 422, 503, scopes=[Scope.RECOMMEND]),
)
async def recommend(
    body: RecommendationRequest,
    request: Request,
    holder: Annotated[ModelHolder, Depends(deps.holder)],
) -> Response:
    """Next tracks for a playlist (trained, or folded in from ``seed_tracks``); never its own tracks,
    and never a track the listener hates.

    The user's rollout arm picks the model version; ``variant`` says which arm answered. With
    no playlist and no seed tracks, the listener's vector from the speed layer (loves and
    plays since the last training) is used when there is one, else the most popular tracks.

    A user in an interleaving experiment gets one list merged from the treatment's and
    production's by team draft (variant ``NAME:interleave``); each item names the version that
    contributed it, and the top-level ``model_version`` is production's.
    """
    model, assignment, interleaved_with = holder.for_user(body.user_id)
    request.state.model_version = model.version  # the latency metric's label: the arm's version
    fresh = request.app.state.overlay.get(body.user_id)
    query = PlaylistQuery(
        playlist_id=body.playlist_id,
        tracks=body.seed_tracks,
        exclude=[*body.exclude_tracks, *fresh.hated] if fresh else body.exclude_tracks,
        k=body.k,
        vector=fresh.vector if fresh and fresh.model_version == model.version else None,
        popularity=assignment.variant == HOLDOUT,
    )
    if interleaved_with is not None:
        return await _interleaved(request, body, (model, interleaved_with), assignment, query, fresh)
    result = await request.app.state.batcher.recommend(model, query)
    return _answer(request, body, model, result, assignment)


def _answer(
    request: Request,
    body: RecommendationRequest,
    model: VersionRecommender,
    result: Recommendations,
    assignment: Assignment,
) -> Response:
    """One version's list: logged as an impression and sent."""
    held_out = assignment.variant == HOLDOUT
    variant = POPULARITY if result.popularity_fallback and not held_out else assignment.variant
    if result.popularity_fallback and not held_out:
        FALLBACKS.labels(model_version=result.model_version).inc()
    request.app.state.impressions.emit(
        Impression(
            request_id=request.state.request_id,
            user_id=body.user_id,
            playlist_id=body.playlist_id,
            model_version=result.model_version,
            variant=variant,
            experiment=assignment.experiment,
            tracks=result.tracks,
        )
    )
    # built by hand (the hot path): the shape is RecommendationResponse, checked by the API tests
    payload = {
        "request_id": request.state.request_id,
        "model_version": result.model_version,
        "variant": variant,
        "items": _item_dicts(model, result.tracks, result.scores),
    }
    return _json(payload)


async def _interleaved(
    request: Request,
    body: RecommendationRequest,
    models: tuple[VersionRecommender, VersionRecommender],
    assignment: Assignment,
    query: PlaylistQuery,
    fresh: UserUpdate | None,
) -> Response:
    """The treatment's and production's lists (each through the batcher) merged by team draft,
    the coins drawn from the request; when either knew nothing of the listener (popular
    tracks), production's list alone, as for any production user."""
    treatment, production = models
    vector = fresh.vector if fresh and fresh.model_version == production.version else None
    batcher = request.app.state.batcher
    first, second = await asyncio.gather(
        batcher.recommend(treatment, query), batcher.recommend(production, replace(query, vector=vector))
    )
    if first.popularity_fallback or second.popularity_fallback:
        request.state.model_version = production.version
        return _answer(request, body, production, second, Assignment(None, CONTROL))
    request_id = request.state.request_id
    merged = team_draft(first.tracks, second.tracks, seed=f"{body.user_id}\x00{request_id}", k=body.k)
    sides = (first, second)
    versions = [sides[team].model_version for team in merged.teams]
    request.app.state.impressions.emit(
        Impression(
            request_id=request_id,
            user_id=body.user_id,
            playlist_id=body.playlist_id,
            model_version=second.model_version,
            variant=assignment.variant,
            experiment=assignment.experiment,
            tracks=merged.tracks,
            track_versions=versions,
        )
    )
    payload = {
        "request_id": request_id,
        "model_version": second.model_version,
        "variant": assignment.variant,
        "items": _merged_item_dicts(models, sides, merged),
    }
    return _json(payload)


def _merged_item_dicts(
    models: tuple[VersionRecommender, VersionRecommender],
    sides: tuple[Recommendations, Recommendations],
    merged: Interleaved,
) -> list[dict[str, Any]]:
    """Each merged track with the score, title and version of the side that contributed it."""
    pairs = list(zip(merged.tracks, merged.teams, strict=True))
    scores = [dict(zip(side.tracks, side.scores, strict=True)) for side in sides]
    meta = [model.track_info([t for t, team in pairs if team == i]) for i, model in enumerate(models)]
    return [
        {
            "track_id": t,
            "score": scores[team][t],
            "model_version": sides[team].model_version,
            **meta[team].get(t, {}),
        }
        for t, team in pairs
    ]


def _json(payload: dict[str, Any]) -> Response:
    return Response(
        json.dumps(payload, allow_nan=False, separators=(",", ":")), media_type="application/json"
    )


@router.get(
    "/tracks/{track_id}/similar",
    response_model=SimilarTracksResponse,
    responses=documented(404, 422, 503, scopes=[Scope.RECOMMEND]),
)
def similar(
    track_id: str,
    request: Request,
    model: Annotated[VersionRecommender, Depends(deps.recommender)],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
) -> SimilarTracksResponse:
    """Tracks closest to a track in the model's embedding space (404 for an unknown track)."""
    tracks, scores = model.similar(track_id, k)
    return SimilarTracksResponse(
        request_id=request.state.request_id,
        model_version=model.version,
        track_id=track_id,
        items=_items(model, tracks, scores),
    )


def _item_dicts(model: VersionRecommender, tracks: list[str], scores: list[float]) -> list[dict[str, Any]]:
    meta = model.track_info(tracks)
    return [{"track_id": t, "score": s, **meta.get(t, {})} for t, s in zip(tracks, scores, strict=True)]


def _items(model: VersionRecommender, tracks: list[str], scores: list[float]) -> list[RecommendedTrack]:
    meta = model.track_info(tracks)
    return [
        RecommendedTrack(track_id=t, score=s, **meta.get(t, {})) for t, s in zip(tracks, scores, strict=True)
    ]
