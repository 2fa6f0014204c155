"""The stream worker's bulk writes: the same partitions and bytes as faust's own path."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from streams.bulk import BulkSender, dump_json, key_partition, load_json


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_a_key_lands_where_the_apis_producer_puts_it(user: str, partitions: int) -> None:
    key = user.encode()
    every = list(range(partitions))
    expected = DefaultPartitioner()(key, every, every)  # the partitioner of aiokafka's producers
    assert key_partition(key, partitions) == expected


JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}
"""murmur2 of these keys by the Java client (Kafka's own tests of ``Utils.murmur2``)."""


@pytest.mark.parametrize("partitions", [1, 4, 7, 64])
def test_a_key_lands_where_the_java_client_puts_it(partitions: int) -> None:
    for key, hashed in JAVA_MURMUR2.items():
        assert key_partition(key.encode(), partitions) == (hashed & 0x7FFFFFFF) % partitions, key


def test_table_values_are_the_json_faust_reads_back() -> None:
    state = {"ids": ["3422e27dc0f646c6"], "by_arm": {"2.1|control": {"plays": 3}}, "hated": ["tr7"]}
    assert json.loads(dump_json(state)) == state
    assert load_json(json.dumps(state).encode()) == state
    assert json.loads(dump_json("load-7")) == "load-7"  # keys: faust's json key serializer


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> object:
        self.records.append((key, value))
        return self

    def record_count(self) -> int:
        return len(self.records)


class _Producer:
    """Hands each batch over after a pause, as aiokafka does while a partition's last batch
    is still in flight."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> None:
        await asyncio.sleep(0)
        self.log.append(f"{topic}/{partition}")


def test_a_commit_never_falls_between_the_batches_of_one_source_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listener's event ids (user-state) and the counts of those events (arm-stats) commit
    together, or a replay would skip events whose counts were never committed."""

    async def scenario() -> list[str]:
        log: list[str] = []
        locks = {source: asyncio.Lock() for source in (0, 1)}
        producer = _Producer(log)
        monkeypatch.setattr("streams.bulk.transaction_producer", lambda app, topic, p: (producer, locks[p]))
        sender = BulkSender(app=None, source_topic="feedback")
        for source in (0, 1):
            for topic in ("user-state-changelog", "arm-stats-changelog", "user-updates"):
                sender.add(source, topic, source, [(b"k", b"v")])

        async def commit(source: int) -> None:
            await asyncio.sleep(0)
            async with locks[source]:
                log.append(f"commit {source}")

        await asyncio.gather(sender.send(), commit(0), commit(1))
        return log

    log = asyncio.run(scenario())
    for source in (0, 1):
        mine = [i for i, entry in enumerate(log) if entry.endswith(f"/{source}")]
        assert log.index(f"commit {source}") not in range(min(mine), max(mine))
