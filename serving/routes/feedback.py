"""``POST /v1/feedback``: plays, skips, loves and hates, made durable before they are acknowledged."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from recsys.events import FeedbackEvent
from serving.metrics import FEEDBACK_EVENTS

router = APIRouter(prefix="/v1", tags=["feedback"])
MAX_BATCH = 1000


class FeedbackBatch(BaseModel):
    """Several events in one request (written together, acknowledged together)."""

    model_config = ConfigDict(extra="forbid")

    events: list[FeedbackEvent] = Field(min_length=1, max_length=MAX_BATCH)


class FeedbackAccepted(BaseModel):
    accepted: int
    event_ids: list[str]


@router.post(
    "/feedback",
    status_code=202,
    response_model=FeedbackAccepted,
    responses={503: {"description": "The event backbone did not confirm the events; retry later."}},
)
async def feedback(body: FeedbackEvent | FeedbackBatch, request: Request) -> FeedbackAccepted:
    """Accept one event or a batch: 202 only once the event backbone has them (``acks=all``).

    Events are idempotent by ``event_id``: resending after a timeout never counts twice.
    """
    events = body.events if isinstance(body, FeedbackBatch) else [body]
    await request.app.state.feedback.write(events)
    for event in events:
        FEEDBACK_EVENTS.labels(type=event.type.value).inc()
    return FeedbackAccepted(accepted=len(events), event_ids=[str(e.event_id) for e in events])
