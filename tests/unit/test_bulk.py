"""The stream worker's bulk writes: the same partitions and bytes as faust's own path."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner import DefaultPartitioner

from streams.bulk import TableEntries, dump_json, key_partition, load_json


class _Cluster:
    """The part of kafka-python's cluster metadata its partitioner reads."""

    def __init__(self, partitions: int) -> None:
        self.partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"user-updates"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_a_key_lands_where_the_apis_producer_puts_it(user: str, partitions: int) -> None:
    key = user.encode()
    expected = DefaultPartitioner().partition("user-updates", user, key, None, None, _Cluster(partitions))
    assert key_partition(key, partitions) == expected


def test_table_values_are_the_json_faust_reads_back() -> None:
    state = {"ids": ["3422e27dc0f646c6"], "by_arm": {"2.1|control": {"plays": 3}}, "hated": ["tr7"]}
    assert json.loads(dump_json(state)) == state
    assert load_json(json.dumps(state).encode()) == state
    assert json.loads(dump_json("load-7")) == "load-7"  # keys: faust's json key serializer


class _MemoryStore:
    """The attributes of faust's memory store that table entries use."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}
        self._key_partition: dict[str, int] = {}


class _Table:
    def __init__(self) -> None:
        self.data = _MemoryStore()


def test_entries_on_the_memory_store_are_kept_as_values_and_returned_as_records() -> None:
    table = _Table()
    entries = TableEntries(table)
    records = entries.put(2, {"u1": {"loved": ["tr1"]}, "u2": {}})
    assert records == [(b'"u1"', b'{"loved":["tr1"]}'), (b'"u2"', b"{}")]
    assert table.data.data["u1"] == {"loved": ["tr1"]} and table.data._key_partition == {"u1": 2, "u2": 2}
    assert entries.get(2, "u1") == {"loved": ["tr1"]} and entries.get(2, "missing") == {}
