"""Table entries and output records written in bulk, inside the current Kafka transaction.

Setting a faust table entry, or ``Topic.send_soon``, sends one message through faust's
producer buffer and then aiokafka's, with a future, callbacks and a debug log line each:
at a few thousand records a second that path cost the stream worker more than half of
its CPU. Here one flush builds a single record batch per ``(topic, partition)`` and hands
it to the transactional producer of the source partition the records come from, so they
commit (or abort) together with that partition's consumer offsets, as faust's own table
writes do. Local table state is written directly into the table's store, and the
changelog offsets are persisted on commit, again as faust does; a restarted worker
recovers these tables from their changelogs exactly as before.

This reaches below faust's public API (its transactional producers and store), which is
why faust-streaming is pinned exactly; the stream integration tests (killed worker,
restarted broker) hold it to the exactly-once promise.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiokafka.partitioner import murmur2
from faust.types import TP


def dump_json(value: Any) -> bytes:
    """JSON as faust's json codec writes it (faust itself uses orjson when installed)."""
    return orjson.dumps(value)


def load_json(data: bytes) -> Any:
    return orjson.loads(data)


def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partition for ``key`` (murmur2, as every producer of the project uses)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class TableEntries:
    """Reads and writes one faust table's entries as JSON bytes, the format of faust's json codec.

    Parameters
    ----------
    table : faust.Table
        A table with the default (json) key and value serializers.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self._store: tuple[Any, bool] | None = None

    def store(self) -> tuple[Any, bool]:
        """The table's store, and whether it keeps serialized bytes (RocksDB) rather than the
        values themselves (memory); looked up once, as the store lives as long as the table."""
        if self._store is None:
            store = self.table.data
            self._store = store, hasattr(store, "_db_for_partition")
        return self._store

    @property
    def topic(self) -> str:
        return str(self.table.changelog_topic.get_topic_name())

    @staticmethod
    def encode_key(key: str) -> bytes:
        return dump_json(key)

    def get(self, partition: int, key: str) -> dict[str, Any]:
        """The entry's value in ``partition``'s store (a fresh dict; empty when absent)."""
        store, keeps_bytes = self.store()
        if keeps_bytes:
            raw = store._db_for_partition(partition).get(self.encode_key(key))
            return dict(load_json(raw)) if raw is not None else {}
        return dict(store.data.get(key) or {})

    def put(self, partition: int, entries: Mapping[str, dict[str, Any]]) -> list[tuple[bytes, bytes]]:
        """Write ``entries`` to the local store of ``partition``; return them as changelog records."""
        store, keeps_bytes = self.store()
        records = [(self.encode_key(key), dump_json(value)) for key, value in entries.items()]
        if keeps_bytes:
            db = store._db_for_partition(partition)
            for key_bytes, value_bytes in records:
                store._key_index[key_bytes] = partition
                db.put(key_bytes, value_bytes)
        else:  # memory://
            for key, value in entries.items():
                store.data[key] = value
                store._key_partition[key] = partition
        return records


class BulkSender:
    """Collects records per ``(topic, partition)`` and sends each group as one batch.

    Parameters
    ----------
    app : faust.App
        An app with ``processing_guarantee="exactly_once"``.
    source_topic : str
        The topic whose partitions own the transactions (the stream's input).
    """

    def __init__(self, app: Any, source_topic: str) -> None:
        self.app = app
        self.source_topic = source_topic
        self.pending: dict[tuple[int, str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
        self.changelogs: dict[str, Any] = {}
        """Changelog topic name -> table store, for persisting offsets on commit."""

    def add(self, source: int, topic: str, partition: int, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Queue ``records`` for ``topic``/``partition``, in the transaction of ``source``."""
        self.pending[(source, topic, partition)].extend(records)

    def track(self, entries: TableEntries) -> None:
        """Persist the changelog offsets of ``entries``' table on commit, as faust does."""
        self.changelogs[entries.topic] = entries.table

    async def send(self) -> None:
        """Hand every queued batch to its transactional producer (delivery completes in the
        background; the transaction's commit waits for it)."""
        pending, self.pending = self.pending, defaultdict(list)
        for (source, topic, partition), records in pending.items():
            producer, lock = self._transaction_producer(source)
            async with lock:
                for batch in _batches(producer, records):
                    delivered = await producer.send_batch(batch, topic, partition=partition)
                    delivered.add_done_callback(self._on_delivered(topic, partition, batch.record_count()))

    def _transaction_producer(self, source: int) -> tuple[Any, asyncio.Lock]:
        app = self.app
        group = app.assignor.group_for_topic(self.source_topic)
        transactional_id = f"{app.conf.id}-{group}-{source}"
        producer = app.producer
        return producer._transaction_producers[transactional_id], producer._trn_locks[transactional_id]

    def _on_delivered(self, topic: str, partition: int, count: int) -> Any:
        table = self.changelogs.get(topic)

        def persist(delivered: asyncio.Future[Any]) -> None:
            if table is None or delivered.cancelled() or delivered.exception() is not None:
                return
            last = delivered.result().offset + count - 1
            self.app.tables.persist_offset_on_commit(table.data, TP(topic, partition), last)

        return persist


def _batches(producer: Any, records: list[tuple[bytes, bytes]]) -> Iterable[Any]:
    """``records`` in as few record batches as the producer's batch size allows."""
    batch = producer.create_batch()
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:
            if batch.record_count() == 0:
                raise ValueError(f"a record of {len(value)} bytes exceeds the producer's batch size")
            yield batch
            batch = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value)} bytes exceeds the producer's batch size")
    if batch.record_count():
        yield batch
