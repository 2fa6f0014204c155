"""Table entries and output records written in bulk, inside the current Kafka transaction.

Setting a faust table entry, or ``Topic.send_soon``, sends one message through faust's
producer buffer and then aiokafka's, with a future, callbacks and a debug log line each:
at a few thousand records a second that path cost the stream worker more than half of
its CPU. Here one flush builds a single record batch per ``(topic, partition)`` and hands
it to the transactional producer of the source partition the records come from, so they
commit (or abort) together with that partition's consumer offsets, as faust's own table
writes do. All the batches of one source partition are handed over under the lock faust
holds while committing that partition's transaction, so a commit never falls between them:
a user's event ids and the counts of those events always commit (or abort) together.
Local table state is written directly into the table's store; a partition's store is
emptied and restored from its changelog whenever the partition is assigned
(:class:`streams.faust_internals.RocksDBStore`), so what an aborted transaction left there
never outlives the worker.

Access to faust's store and producers goes through :mod:`streams.faust_internals`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from streams.faust_internals import index_key, memory_put, partition_store, transaction_producer


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
            raw = partition_store(store, partition).get(self.encode_key(key))
            return dict(load_json(raw)) if raw is not None else {}
        return dict(store.data.get(key) or {})

    def put(self, partition: int, entries: Mapping[str, dict[str, Any]]) -> list[tuple[bytes, bytes]]:
        """Write ``entries`` to the local store of ``partition``; return them as changelog records."""
        store, keeps_bytes = self.store()
        records = [(self.encode_key(key), dump_json(value)) for key, value in entries.items()]
        if keeps_bytes:
            db = partition_store(store, partition)
            for key_bytes, value_bytes in records:
                index_key(store, key_bytes, partition)
                db.put(key_bytes, value_bytes)
        else:  # memory://
            for key, value in entries.items():
                memory_put(store, key, value, partition)
        return records


class BulkSender:
    """Collects records per source partition and ``(topic, partition)``; sends each group as
    one batch.

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
        self.pending: dict[int, dict[tuple[str, int], list[tuple[bytes, bytes]]]] = {}

    def add(self, source: int, topic: str, partition: int, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Queue ``records`` for ``topic``/``partition``, in the transaction of ``source``."""
        self.pending.setdefault(source, defaultdict(list))[(topic, partition)].extend(records)

    async def send(self) -> None:
        """Hand every queued batch to its transactional producer, each source partition's
        batches under one hold of its transaction's lock (delivery completes in the
        background; the transaction's commit waits for it)."""
        pending, self.pending = self.pending, {}
        for source, groups in pending.items():
            producer, lock = transaction_producer(self.app, self.source_topic, source)
            async with lock:
                for (topic, partition), records in groups.items():
                    for batch in _batches(producer, records):
                        await producer.send_batch(batch, topic, partition=partition)


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
