"""``POST /v1/feedback``: plays, skips, loves and hates, made durable before they are acknowledged
(scope ``feedback``, within the rate limits per API key and per listener)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, PlainValidator

from recsys.access.guard import Client
from recsys.access.rates import FeedbackLimits
from recsys.access.scopes import Scope
from recsys.errors import RateLimited
from recsys.events.schemas import FeedbackEvent
from serving import auth
from serving.bodies import JsonRoute
from serving.errors import documented
from serving.metrics import FEEDBACK_EVENTS, LIMITED

router = APIRouter(prefix="/v1", tags=["feedback"], route_class=JsonRoute)
MAX_BATCH = 1000


class FeedbackBatch(BaseModel):
    """Several events in one request (written together, acknowledged together)."""

    model_config = ConfigDict(extra="forbid")

    events: list[FeedbackEvent] = Field(min_length=1, max_length=MAX_BATCH)


def _one_shape(body: Any) -> FeedbackEvent | FeedbackBatch:
    """A body with ``events`` is a batch, anything else one event: its errors are that shape's alone."""
    shape = FeedbackBatch if isinstance(body, dict) and "events" in body else FeedbackEvent
    return shape.model_validate(body)


FeedbackBody = Annotated[
    FeedbackEvent | FeedbackBatch,
    PlainValidator(_one_shape, json_schema_input_type=FeedbackEvent | FeedbackBatch),
]


class FeedbackAccepted(BaseModel):
    accepted: int
    event_ids: list[str]


@router.post(
    "/feedback",
    status_code=202,
    response_model=FeedbackAccepted,
    responses=documented(
        413,
        415,
        422,
        429,
        503,
        notes={503: "The event backbone did not confirm the events; retry later."},
        scopes=[Scope.FEEDBACK],
    ),
)
async def feedback(
    body: FeedbackBody, request: Request, client: Annotated[Client, Depends(auth.FEEDBACK)]
) -> FeedbackAccepted:
    """Accept one event or a batch: 202 only once the event backbone has them (``acks=all``).

    Events are idempotent by ``event_id``: resending after a timeout never counts twice. Each
    event counts toward the rate limits of the API key and of its listener (429 beyond them,
    with ``Retry-After``).
    """
    events = body.events if isinstance(body, FeedbackBatch) else [body]
    _admit(request.app.state.feedback_limits, client, events)
    await request.app.state.feedback.write(events)
    for event in events:
        FEEDBACK_EVENTS.labels(type=event.type.value).inc()
    return FeedbackAccepted(accepted=len(events), event_ids=[str(e.event_id) for e in events])


def _admit(limits: FeedbackLimits, client: Client, events: list[FeedbackEvent]) -> None:
    """Count the events toward the client's and their listeners' limits (a refusal is counted in
    ``recsys_requests_limited_total``)."""
    try:
        limits.admit(client=client.name, events_per_user=Counter(event.user_id for event in events))
    except RateLimited as exc:
        LIMITED.labels(limit=exc.limit).inc()
        raise
