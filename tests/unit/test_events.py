"""Event schemas: what is accepted, what is refused with a reason, and the wire format."""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recsys.errors import InvalidRequest
from recsys.events.schemas import DeadLetter, FeedbackEvent, ModelEvent, ModelEventKind, UserUpdate
from recsys.events.topics import ALL, FEEDBACK, FOREVER, USER_UPDATES
from recsys.events.weights import FeedbackType


def test_a_play_round_trips_through_json() -> None:
    event = FeedbackEvent(user_id="u1", track_id="t1", type=FeedbackType.PLAY, listen_ms=30_000)
    again = FeedbackEvent.from_bytes(event.to_bytes())
    assert again == event and again.schema_version == 1 and isinstance(again.event_id, uuid.UUID)
    assert "playlist_id" not in json.loads(event.to_bytes())  # unset optional fields stay off the wire


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"user_id": "u", "track_id": "t", "type": "play"}, "listen_ms is required"),
        ({"user_id": "u", "track_id": "t", "type": "love", "listen_ms": 5}, "only applies"),
        ({"user_id": "u", "track_id": "t", "type": "shout"}, "type"),
        ({"user_id": "", "track_id": "t", "type": "love"}, "user_id"),
        ({"user_id": "u", "track_id": "t", "type": "love", "mood": "happy"}, "mood"),
        ({"user_id": "u", "track_id": "t", "type": "love", "schema_version": 2}, "schema_version"),
        ({"user_id": "u", "track_id": "t", "type": "skip", "listen_ms": -1}, "listen_ms"),
    ],
)
def test_invalid_events_are_refused_with_the_reason(payload: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        FeedbackEvent.from_bytes(json.dumps(payload))


def test_garbage_is_refused_not_crashed_on() -> None:
    with pytest.raises(InvalidRequest):
        FeedbackEvent.from_bytes(b"\xff\x00not json")


@given(st.binary(max_size=200))
def test_any_bytes_either_parse_or_raise_invalid_request(data: bytes) -> None:
    with contextlib.suppress(InvalidRequest):
        FeedbackEvent.from_bytes(data)


def test_other_events_round_trip() -> None:
    for event in (
        ModelEvent(kind=ModelEventKind.PROMOTED, version="2.2", detail={"from": "2.1"}),
        UserUpdate(user_id="u", model_version="2.1", vector=[0.5, -1.0], hated=["t9"]),
        DeadLetter(source_topic="feedback", partition=0, offset=7, reason="bad", payload="{}"),
    ):
        assert type(event).from_bytes(event.to_bytes()) == event


def test_topics_are_set_explicitly() -> None:
    assert FEEDBACK.retention_ms == FOREVER and FEEDBACK.configs()["retention.ms"] == "-1"
    assert USER_UPDATES.configs()["cleanup.policy"] == "compact"
    assert len({t.name for t in ALL}) == len(ALL) and all(t.partitions >= 1 for t in ALL)
