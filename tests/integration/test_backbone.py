"""Feedback reaches the real broker durably; topics are created as declared."""

from __future__ import annotations

import time
import uuid

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from recsys.events import FeedbackEvent
from recsys.impressions import Impression
from recsys.registry import FileRegistry
from recsys.topics import ALL, FEEDBACK, SERVED, USER_UPDATES
from serving.app import create_app
from serving.settings import ServingSettings
from streams.broker import LocalKafka
from tests.keys import authorised
from training.pipeline import TrainResult


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def read_since(
    bootstrap: str, topic: str, start: dict[int, int], *, expect: int
) -> list[tuple[bytes, bytes]]:
    """Messages written after ``start`` (per-partition offsets), waiting up to 20 s for ``expect`` of them."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=20_000
    )
    try:
        partitions = [TopicPartition(topic, p) for p in start]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, start[tp.partition])
        out = []
        for message in consumer:
            out.append((message.key, message.value))
            if len(out) >= expect:
                break
        return out
    finally:
        consumer.close()


def test_topics_exist_with_their_settings(kafka: LocalKafka) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        assert {t.name for t in ALL} <= set(admin.list_topics())
        described = admin.describe_topics([FEEDBACK.name])
        assert len(described[0]["partitions"]) == FEEDBACK.partitions
        configs = admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, FEEDBACK.name),
                ConfigResource(ConfigResourceType.TOPIC, USER_UPDATES.name),
            ]
        )
        text = str(configs)
        assert "retention.ms" in text and "'-1'" in text and "compact" in text
    finally:
        admin.close()


def test_accepted_feedback_is_in_the_topic_exactly_once(
    kafka: LocalKafka, trained: tuple[FileRegistry, TrainResult]
) -> None:
    registry, _ = trained
    settings = ServingSettings(
        registry=registry.root, feedback_sink=f"kafka://{kafka.bootstrap}", reload_interval_s=0
    )
    events = [
        {
            "user_id": f"u{i % 7}",
            "track_id": f"tr{i}",
            "type": "play",
            "listen_ms": 1000 * i,
            "event_id": str(uuid.uuid4()),
        }
        for i in range(60)
    ]
    before = end_offsets(kafka.bootstrap, FEEDBACK.name)
    with TestClient(create_app(settings), headers=authorised(settings.registry)) as client:
        batch = client.post("/v1/feedback", json={"events": events[:50]})
        singles = [client.post("/v1/feedback", json=e) for e in events[50:]]
    assert batch.status_code == 202 and all(r.status_code == 202 for r in singles)
    messages = read_since(kafka.bootstrap, FEEDBACK.name, before, expect=60)
    got = [FeedbackEvent.from_bytes(value) for _, value in messages]
    assert sorted(str(e.event_id) for e in got) == sorted(e["event_id"] for e in events)
    assert all(key == e.user_id.encode() for (key, _), e in zip(messages, got, strict=True))


@pytest.mark.parametrize("payload", [{"user_id": "u", "track_id": "t", "type": "play"}, {"events": []}])
def test_invalid_feedback_writes_nothing(
    kafka: LocalKafka, trained: tuple[FileRegistry, TrainResult], payload: dict[str, object]
) -> None:
    registry, _ = trained
    settings = ServingSettings(
        registry=registry.root, feedback_sink=f"kafka://{kafka.bootstrap}", reload_interval_s=0
    )
    before = end_offsets(kafka.bootstrap, FEEDBACK.name)
    with TestClient(create_app(settings), headers=authorised(settings.registry)) as client:
        assert client.post("/v1/feedback", json=payload).status_code == 422
    assert end_offsets(kafka.bootstrap, FEEDBACK.name) == before


def test_every_served_list_reaches_the_impressions_topic(
    kafka: LocalKafka, trained: tuple[FileRegistry, TrainResult]
) -> None:
    registry, _ = trained
    settings = ServingSettings(
        registry=registry.root,
        feedback_sink="memory://",
        impression_log=f"kafka://{kafka.bootstrap}",
        reload_interval_s=0,
    )
    before = end_offsets(kafka.bootstrap, SERVED.name)
    user = f"viewer-{uuid.uuid4().hex[:6]}"
    with TestClient(create_app(settings), headers=authorised(settings.registry)) as client:
        deadline = time.monotonic() + 20
        while client.app.state.impressions._producer is None:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the impression producer did not connect"
            time.sleep(0.1)
        answers = [
            client.post("/v1/recommendations", json={"user_id": user, "seed_tracks": ["tr1"], "k": 3}).json()
            for _ in range(5)
        ]
    messages = read_since(kafka.bootstrap, SERVED.name, before, expect=5)
    got = [Impression.model_validate_json(value) for _, value in messages]
    assert sorted(i.request_id for i in got) == sorted(a["request_id"] for a in answers)
    assert all(i.user_id == user and i.model_version == "2.1" and len(i.tracks) == 3 for i in got)
