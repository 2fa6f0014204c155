"""Feedback reaches the real broker durably; topics are created as declared."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from fastapi.testclient import TestClient

from deploy.kafka_launcher import LocalKafka
from recsys.events.impressions import Impression
from recsys.events.schemas import FeedbackEvent
from recsys.events.topics import ALL, FEEDBACK, SERVED, USER_UPDATES
from recsys.registry.store import FileRegistry
from serving.app import create_app
from serving.settings import ServingSettings
from tests.keys import authorised
from training.pipeline import TrainResult


async def started_consumer(bootstrap: str, **config: Any) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **config)
    await consumer.start()
    return consumer


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic`` (the consumer asks the broker: it knows no topic until told)."""
    await consumer._client.add_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    async def ends() -> dict[int, int]:
        consumer = await started_consumer(bootstrap)
        try:
            partitions = await partitions_of(consumer, topic)
            return {tp.partition: offset for tp, offset in (await consumer.end_offsets(partitions)).items()}
        finally:
            await consumer.stop()

    return asyncio.run(ends())


def read_since(
    bootstrap: str, topic: str, start: dict[int, int], *, expect: int
) -> list[tuple[bytes, bytes]]:
    """Messages written after ``start`` (per-partition offsets), waiting up to 20 s for ``expect`` of them."""

    async def read() -> list[tuple[bytes, bytes]]:
        consumer = await started_consumer(bootstrap)
        try:
            partitions = [TopicPartition(topic, p) for p in start]
            consumer.assign(partitions)
            for tp in partitions:
                consumer.seek(tp, start[tp.partition])
            return await read_up_to(consumer, expect, idle_s=20.0)
        finally:
            await consumer.stop()

    return asyncio.run(read())


async def read_up_to(consumer: AIOKafkaConsumer, expect: int, *, idle_s: float) -> list[tuple[bytes, bytes]]:
    """The first ``expect`` messages, or fewer when none arrives for ``idle_s``."""
    out: list[tuple[bytes, bytes]] = []
    idle_since = time.monotonic()
    while len(out) < expect and time.monotonic() - idle_since < idle_s:
        batches = await consumer.getmany(timeout_ms=200)
        for records in batches.values():
            out.extend((record.key, record.value) for record in records)
        if batches:
            idle_since = time.monotonic()
    return out[:expect]


def send_all(bootstrap: str, topic: str, payloads: list[tuple[bytes | None, bytes]]) -> None:
    """Write ``(key, value)`` messages with ``acks=all`` and wait until each is confirmed."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            deliveries = [await producer.send(topic, value, key=key) for key, value in payloads]
            await asyncio.gather(*deliveries)
        finally:
            await producer.stop()

    asyncio.run(send())


def test_topics_exist_with_their_settings(kafka: LocalKafka) -> None:
    async def describe() -> tuple[list[str], list[Any], list[Any]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            configs = await admin.describe_configs(
                [
                    ConfigResource(ConfigResourceType.TOPIC, FEEDBACK.name),
                    ConfigResource(ConfigResourceType.TOPIC, USER_UPDATES.name),
                ]
            )
            return await admin.list_topics(), await admin.describe_topics([FEEDBACK.name]), configs
        finally:
            await admin.close()

    names, described, responses = asyncio.run(describe())
    assert {t.name for t in ALL} <= set(names)
    assert len(described[0]["partitions"]) == FEEDBACK.partitions
    configs = {
        name: {entry[0]: entry[1] for entry in entries}
        for response in responses
        for _code, _message, _type, name, entries, *_ in response.resources
    }
    assert configs[FEEDBACK.name]["retention.ms"] == "-1"
    assert "compact" in configs[USER_UPDATES.name]["cleanup.policy"]


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
