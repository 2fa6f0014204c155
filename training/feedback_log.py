"""The feedback log, read from Kafka up to the offsets current when a retraining starts.

The ``feedback`` topic is the source of truth for retraining (kept forever). A retraining
reads every partition from its start to the end offsets it found when it began, so the
data it learned from is exactly named by those offsets; they go into the new version's
manifest (``lineage.feedback.end_offsets``) and are the next retraining's starting cut.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recsys.errors import BackboneUnavailable, InvalidRequest, backbone_failures
from recsys.events.schemas import FeedbackEvent
from recsys.events.topics import FEEDBACK

log = logging.getLogger(__name__)
POLL_MS = 500
BOOTSTRAP_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0
"""A read that makes no progress for this long fails (the broker went away)."""
LOG_COLUMNS = ("user_id", "track_id", "type", "listen_ms", "duration_ms", "ts", "received_ms")


@dataclass
class FeedbackCut:
    """What one read of the log saw."""

    end_offsets: dict[int, int]
    events: int
    invalid: int
    path: Path | None
    """The event log as Parquet (``user_id,track_id,type,listen_ms,duration_ms,ts,received_ms``); ``None``
    if empty. ``received_ms`` is the record's Kafka timestamp: when the API wrote the event,
    which, unlike ``ts``, a client cannot choose (account trust dates accounts by it)."""

    def lineage(self) -> dict[str, Any]:
        return {
            "topic": FEEDBACK.name,
            "end_offsets": {str(p): o for p, o in sorted(self.end_offsets.items())},
            "events": self.events,
            "invalid_events": self.invalid,
        }


def read_feedback(bootstrap: str, path: Path) -> FeedbackCut:
    """Read ``feedback`` up to its current end offsets into a Parquet event log at ``path``.

    The read runs an aiokafka consumer on an event loop of its own (:func:`asyncio.run`),
    so it must not be called from a running event loop.

    Raises
    ------
    BackboneUnavailable
        When the broker cannot be reached or stops answering mid-read.
    """
    columns: dict[str, list[Any]] = {k: [] for k in LOG_COLUMNS}
    with backbone_failures(f"the feedback log at {bootstrap} could not be read"):
        ends, invalid = asyncio.run(_read(bootstrap, columns))
    events = len(columns["user_id"])
    if events:
        table = pa.table(
            {
                "user_id": pa.array(columns["user_id"], pa.string()),
                "track_id": pa.array(columns["track_id"], pa.string()),
                "type": pa.array(columns["type"], pa.string()),
                "listen_ms": pa.array(columns["listen_ms"], pa.float64()),
                "duration_ms": pa.array(columns["duration_ms"], pa.float64()),
                "ts": pa.array(columns["ts"], pa.int64()),
                "received_ms": pa.array(columns["received_ms"], pa.int64()),
            }
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    log.info("read %d feedback events (%d invalid) up to offsets %s", events, invalid, ends)
    return FeedbackCut(ends, events, invalid, path if events else None)


async def _read(bootstrap: str, columns: dict[str, list[Any]]) -> tuple[dict[int, int], int]:
    """The end offsets found at the start, and the invalid events among those read into ``columns``."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        client_id="recsys-trainer-feedback",
        max_poll_records=10_000,
    )
    try:
        await asyncio.wait_for(consumer.start(), BOOTSTRAP_TIMEOUT_S)
        partitions = await _partitions(consumer)
        ends = {tp.partition: o for tp, o in (await consumer.end_offsets(partitions)).items()}
        return ends, await _drain(consumer, partitions, ends, columns)
    finally:
        await consumer.stop()


async def _partitions(consumer: Any) -> list[Any]:
    """Every partition of ``feedback``, from the broker's current metadata."""
    from aiokafka import TopicPartition

    await consumer._client.add_topic(FEEDBACK.name)  # the consumer knows only the topics it was told of
    found = consumer.partitions_for_topic(FEEDBACK.name) or ()
    return [TopicPartition(FEEDBACK.name, p) for p in sorted(found)]


async def _drain(
    consumer: Any, partitions: list[Any], ends: dict[int, int], columns: dict[str, list[Any]]
) -> int:
    wanted = [tp for tp in partitions if ends[tp.partition] > 0]
    if not wanted:
        return 0
    consumer.assign(wanted)
    await consumer.seek_to_beginning(*wanted)
    invalid, last_progress = 0, time.monotonic()
    open_parts = {tp.partition: tp for tp in wanted}
    while open_parts:
        batch = await consumer.getmany(timeout_ms=POLL_MS)
        if batch:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > READ_TIMEOUT_S:
            raise BackboneUnavailable(f"the feedback log stopped at {consumer.assignment()}")
        for tp, records in batch.items():
            for record in records:
                if record.offset >= ends[tp.partition]:
                    break
                invalid += _add(record.value, record.timestamp, columns)
        for partition, tp in list(open_parts.items()):
            if await consumer.position(tp) >= ends[partition]:
                del open_parts[partition]
    return invalid


def _add(value: bytes | None, received_ms: int, columns: dict[str, list[Any]]) -> int:
    """Append one event; 1 if it was invalid (the stream worker dead-letters those)."""
    try:
        event = FeedbackEvent.from_bytes(value or b"")
    except InvalidRequest:
        return 1
    columns["user_id"].append(event.user_id)
    columns["track_id"].append(event.track_id)
    columns["type"].append(event.type.value)
    columns["listen_ms"].append(float(event.listen_ms or 0))
    columns["duration_ms"].append(None if event.duration_ms is None else float(event.duration_ms))
    ts = int(event.ts.timestamp() * 1000)
    columns["ts"].append(ts)
    columns["received_ms"].append(int(received_ms) if received_ms >= 0 else ts)  # -1: no broker time
    return 0
