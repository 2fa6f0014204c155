"""What benchmarks write to and read from the broker directly, with aiokafka on a one-shot event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


def send_all(
    bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]], **config: Any
) -> None:
    """Write ``(key, value)`` messages to ``topic`` with ``acks=all`` and wait until each is confirmed.

    ``config`` goes to :class:`aiokafka.AIOKafkaProducer` (``linger_ms``, ``max_batch_size``).
    """
    asyncio.run(_send_all(bootstrap, topic, messages, config))


async def _send_all(
    bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]], config: dict[str, Any]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **config)
    await producer.start()
    try:
        deliveries = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


def records_in(bootstrap: str, wanted: Callable[[str], bool]) -> int:
    """Records in every partition of the topics whose names ``wanted`` accepts (their end offsets summed)."""
    return asyncio.run(_records_in(bootstrap, wanted))


async def _records_in(bootstrap: str, wanted: Callable[[str], bool]) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = []
        for topic in sorted(t for t in await consumer.topics() if wanted(t)):
            await consumer._client.add_topic(topic)  # the consumer knows only the topics it was told of
            partitions += [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()
