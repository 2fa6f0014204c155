"""``POST /v1/feedback``: plays, skips, loves and hates, made durable before they are acknowledged."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, PlainValidator

from recsys.events import FeedbackEvent
from serving.bodies import JsonRoute
from serving.errors import documented
from serving.metrics import FEEDBACK_EVENTS

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
        413, 415, 422, 503, notes={503: "The event backbone did not confirm the events; retry later."}
    ),
)
async def feedback(body: FeedbackBody, request: Request) -> FeedbackAccepted:
    """Accept one event or a batch: 202 only once the event backbone has them (``acks=all``).

    Events are idempotent by ``event_id``: resending after a timeout never counts twice.
    """
    events = body.events if isinstance(body, FeedbackBatch) else [body]
    await request.app.state.feedback.write(events)
    for event in events:
        FEEDBACK_EVENTS.labels(type=event.type.value).inc()
    return FeedbackAccepted(accepted=len(events), event_ids=[str(e.event_id) for e in events])
