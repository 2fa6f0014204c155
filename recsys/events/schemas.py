"""The events that flow between the processes, one schema each, JSON on the wire.

Every producer and consumer (serving, the stream processors, the trainer) reads and writes
these models and nothing else, so a field means the same everywhere. Each carries
``schema_version``; a consumer refuses a version it does not know (the event goes to the
dead-letter topic with the reason) instead of guessing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recsys.errors import InvalidRequest
from recsys.events.weights import FeedbackType

SCHEMA_VERSION: Literal[1] = 1
Id = Annotated[str, Field(min_length=1, max_length=256)]
LISTENING_TYPES = frozenset({FeedbackType.PLAY, FeedbackType.SKIP, FeedbackType.COMPLETE})
SLICE_VALUE = r"^[A-Za-z0-9_.-]+$"
"""Platform and country values: they name experiment slices, so no separators."""


def now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Common shape: versioned, strict about unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Self:
        """Parse one message; raises :class:`InvalidRequest` with the reason when it is not valid."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidRequest(f"invalid {cls.__name__}: {_reason(exc)}") from exc


class FeedbackEvent(Event):
    """One thing a listener did with a track."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "event_id": "6f1c0e3e-8a51-4d53-9b8c-0d7f4f1a2b3c",
                    "user_id": "u42",
                    "track_id": "tr1",
                    "type": "play",
                    "listen_ms": 95000,
                    "request_id": "101e9577",
                    "model_version": "2.1",
                    "variant": "control",
                }
            ]
        },
    )

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Idempotency key.")
    user_id: Id
    track_id: Id
    playlist_id: Id | None = None
    type: FeedbackType
    listen_ms: int | None = Field(default=None, ge=0, le=24 * 3600 * 1000)
    duration_ms: int | None = Field(default=None, gt=0, le=24 * 3600 * 1000)
    ts: datetime = Field(default_factory=now)
    request_id: str | None = Field(default=None, max_length=128)
    model_version: str | None = Field(default=None, max_length=32)
    variant: str | None = Field(default=None, max_length=128)
    platform: str | None = Field(
        default=None,
        max_length=32,
        pattern=SLICE_VALUE,
        description="Client platform (ios, android, web, ...).",
    )
    country: str | None = Field(
        default=None, max_length=8, pattern=SLICE_VALUE, description="Listener's country (ISO 3166 code)."
    )

    @model_validator(mode="after")
    def _listening_needs_a_duration(self) -> Self:
        if self.type in LISTENING_TYPES and self.listen_ms is None:
            raise ValueError(f"listen_ms is required for {self.type.value} events")
        if self.type not in LISTENING_TYPES and self.listen_ms is not None:
            raise ValueError(f"listen_ms only applies to play, skip and complete, not {self.type.value}")
        return self


class ModelEventKind(StrEnum):
    REGISTERED = "registered"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ROLLOUT_CHANGED = "rollout_changed"
    ROLLOUT_DECISION = "rollout_decision"


class ModelEvent(Event):
    """Something happened to a model version or the rollout plan."""

    kind: ModelEventKind
    version: str | None = None
    detail: dict[str, str | float | int | None] = Field(default_factory=dict)
    ts: datetime = Field(default_factory=now)


class UserUpdate(Event):
    """The speed layer's view of one user: a fresh vector and the tracks they hate."""

    user_id: Id
    model_version: str
    vector: list[float] | None = None
    hated: list[str] = Field(default_factory=list)
    loved: list[str] = Field(default_factory=list)
    ts: datetime = Field(default_factory=now)
    cause_event_id: uuid.UUID | None = None
    cause_ts: datetime | None = None
    """When the feedback that caused this update was made (for freshness)."""


class RetrainRequest(Event):
    """Enough new feedback arrived since the registry's latest feedback cut.

    ``feedback_cut`` names that cut (partition -> offset of ``feedback``; empty: the
    log's start); ``request_id`` is derived from it, so the same cut is never requested
    twice and a trainer can tell a request it already served.
    """

    request_id: str
    production_version: str | None
    feedback_cut: dict[str, int] = Field(default_factory=dict)
    new_events: int
    oldest_new_event: datetime | None = None
    reason: str
    ts: datetime = Field(default_factory=now)


class DeadLetter(Event):
    """A message a consumer could not accept, with where it came from and why."""

    source_topic: str
    partition: int
    offset: int
    reason: str
    payload: str
    ts: datetime = Field(default_factory=now)


def _reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"
