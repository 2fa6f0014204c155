"""Request and response bodies of the API (their JSON schema is the OpenAPI contract)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from recsys.registry.plan import MAX_HOLDOUT
from recsys.scoring.recommender import MAX_K

MAX_SEED_TRACKS = 500


class RecommendationRequest(BaseModel):
    """Who is listening, to what, and how many next tracks to return."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"user_id": "u42", "playlist_id": None, "seed_tracks": ["tr1", "tr2"], "k": 10}]
        },
    )

    user_id: str = Field(min_length=1, max_length=256)
    playlist_id: str | None = Field(default=None, max_length=256)
    seed_tracks: list[str] = Field(default_factory=list, max_length=MAX_SEED_TRACKS)
    k: int = Field(default=20, ge=1, le=MAX_K)
    exclude_tracks: list[str] = Field(default_factory=list, max_length=MAX_SEED_TRACKS)


class RecommendedTrack(BaseModel):
    track_id: str
    score: float
    title: str | None = None
    artist: str | None = None
    model_version: str | None = Field(
        default=None,
        description="In a list merged from two versions (variant NAME:interleave), the version that "
        "contributed this track, and whose score it carries: send it back with the track's feedback.",
    )


class RecommendationResponse(BaseModel):
    """Best-first tracks, and which model version and variant produced them.

    In an interleaving experiment (variant ``NAME:interleave``) the list is merged from the
    treatment's and production's; ``model_version`` is production's and each item names the
    version that contributed it.
    """

    request_id: str
    model_version: str
    variant: str
    items: list[RecommendedTrack]


class SimilarTracksResponse(BaseModel):
    request_id: str
    model_version: str
    track_id: str
    items: list[RecommendedTrack]


class ModelSummary(BaseModel):
    version: str
    stage: str
    algorithm: str
    created_at: str
    serving: bool
    provider: str | None = None
    rollout_share: float = 0.0
    """Share of users its experiments send to it (treatment versions)."""
    metrics: dict[str, float] = Field(default_factory=dict)


class ModelDetail(ModelSummary):
    manifest: dict[str, Any]


class ErrorBody(BaseModel):
    """Every error the API returns has this shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "invalid_request",
                    "message": "events.3.listen_ms: input should be greater than or equal to 0",
                    "request_id": "4429a04551decd8ab604ebe4993b6e37",
                }
            ]
        }
    )

    error: str = Field(description="Stable, machine-readable code (model_unavailable, invalid_request).")
    message: str = Field(description="One human line; for a 422 it names the field, never the value sent.")
    request_id: str | None = Field(
        description="The x-request-id of the call (null only before one is given)."
    )


class HoldoutRequest(BaseModel):
    """Share of users held out of personalisation."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"share": 0.01}]})

    share: float = Field(ge=0.0, le=MAX_HOLDOUT, description="0..0.5; 0 ends the holdout.")
