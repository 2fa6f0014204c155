"""How far a changelog goes, as the worker's recovery asks the real broker: the last stable
offset, known before anything of the partition has been fetched."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TP

from deploy.kafka_launcher import LocalKafka
from streams.faust_internals import end_offsets, settled_end_offsets

MARKERS_TIMEOUT_S = 30.0


async def produce(bootstrap: str, topic: str, transactions: list[int], open_records: int) -> int:
    """Commit one transaction of each size in ``transactions`` to partition 0 of ``topic``,
    then leave one of ``open_records`` records open; returns the offset the open one starts at."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"t-{uuid.uuid4()}")
    await producer.start()
    try:
        for size in transactions:
            async with producer.transaction():
                for i in range(size):
                    await producer.send_and_wait(topic, f"v{i}".encode(), partition=0)
        if not open_records:
            return -1
        await producer.begin_transaction()
        first = await producer.send_and_wait(topic, b"open", partition=0)
        for _ in range(open_records - 1):
            await producer.send_and_wait(topic, b"open", partition=0)
        return int(first.offset)
    finally:
        await producer.stop()  # the open transaction stays open on the broker until it times out


async def ends_seen(bootstrap: str, topic: str) -> tuple[int, int | None]:
    """The end offset from :func:`end_offsets` and what aiokafka knows without a fetch."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await consumer.start()
    try:
        tp = TP(topic, 0)
        consumer.assign([tp])
        found = await end_offsets(consumer, {tp})
        return found[tp], consumer.last_stable_offset(tp)
    finally:
        await consumer.stop()


async def create(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


@pytest.mark.parametrize(("transactions", "open_records"), [([3], 0), ([1, 4, 2], 0), ([5, 2], 3), ([], 2)])
def test_the_end_of_a_changelog_is_its_last_stable_offset_before_any_fetch(
    kafka: LocalKafka, transactions: list[int], open_records: int
) -> None:
    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    asyncio.run(create(kafka.bootstrap, topic))
    open_at = asyncio.run(produce(kafka.bootstrap, topic, transactions, open_records))
    committed = sum(transactions) + len(transactions)  # each commit adds a marker
    expected = open_at if open_records else committed
    # a commit returns before the coordinator has written its markers: until then the last
    # stable offset stays before that transaction
    deadline = time.monotonic() + MARKERS_TIMEOUT_S
    while True:
        end, cached = asyncio.run(ends_seen(kafka.bootstrap, topic))
        assert cached is None  # what faust's recovery would have used: it reads as -1
        if end == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert end == expected


async def settled_end(bootstrap: str, topic: str, timeout_s: float) -> tuple[int, float]:
    """:func:`settled_end_offsets` of partition 0 with a fresh consumer, and how long it took."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await consumer.start()
    try:
        tp = TP(topic, 0)
        started = time.monotonic()
        found = await settled_end_offsets(consumer, [bootstrap], {tp}, timeout_s=timeout_s)
        return found[tp], time.monotonic() - started
    finally:
        await consumer.stop()


@pytest.mark.parametrize("transactions", [[1], [3, 1], [2, 2, 5]])
def test_a_transaction_just_committed_is_inside_the_settled_end_at_once(
    kafka: LocalKafka, transactions: list[int]
) -> None:
    """Asked right after the commits return, before their markers may be written: the end
    already includes every committed transaction, with no polling by the caller."""
    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    asyncio.run(create(kafka.bootstrap, topic))

    async def commit_then_ask() -> tuple[int, float]:
        await produce(kafka.bootstrap, topic, transactions, 0)
        return await settled_end(kafka.bootstrap, topic, MARKERS_TIMEOUT_S)

    end, _ = asyncio.run(commit_then_ask())
    assert end == sum(transactions) + len(transactions)


def test_a_transaction_left_open_bounds_the_wait_and_is_left_out(kafka: LocalKafka) -> None:
    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    asyncio.run(create(kafka.bootstrap, topic))
    open_at = asyncio.run(produce(kafka.bootstrap, topic, [2], 2))
    end, took = asyncio.run(settled_end(kafka.bootstrap, topic, 1.0))
    assert end == open_at
    assert took >= 1.0
