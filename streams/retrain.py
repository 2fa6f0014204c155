"""The retrain trigger: one ``retrain-requests`` event per feedback cut, whoever runs it.

Run by the stream worker's leader on a timer. Each check compares the feedback log's end
offsets with the registry's latest feedback cut (:mod:`recsys.retraining`); when the
thresholds say so it emits a :class:`~recsys.events.RetrainRequest` whose id is derived
from the cut. Before emitting it reads the last request on the (single-partition) topic:
if that one already names the same cut, nothing is sent. So a restarted worker, or a new
leader after a rebalance, does not ask again; once the trainer registers a version past
the cut, the cut moves and counting starts over.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from recsys.errors import InvalidRequest
from recsys.events import RetrainRequest
from recsys.registry import FileRegistry
from recsys.retraining import (
    Thresholds,
    feedback_cut,
    new_events,
    reason_to_retrain,
    request_id,
    retrained_under_test,
)
from recsys.topics import FEEDBACK, RETRAIN_REQUESTS

log = logging.getLogger(__name__)
TIMEOUT_MS = 10_000


class RetrainTrigger:
    """Checks the feedback log against the registry and emits retrain requests.

    Parameters
    ----------
    registry : FileRegistry
        Where the latest feedback cut is read.
    bootstrap : str
        ``host:port`` of a broker.
    thresholds : Thresholds
        Count and age thresholds.
    """

    def __init__(self, registry: FileRegistry, bootstrap: str, thresholds: Thresholds) -> None:
        self.registry, self.bootstrap, self.thresholds = registry, bootstrap, thresholds
        self._consumer: Any = None
        self._producer: Any = None

    def check(self) -> RetrainRequest | None:
        """Emit a request if one is due and not already on the topic; returns what was sent."""
        busy = retrained_under_test(self.registry.rollout())
        if busy is not None:
            log.debug("no retraining while experiment %s runs", busy)
            return None
        cut = feedback_cut(self.registry)
        ends = self._end_offsets()
        new = new_events(cut, ends)
        if new == 0:
            return None
        wanted = request_id(cut)
        last = self._last_request()
        if last is not None and last.request_id == wanted:
            return None
        oldest = self._oldest_new_ms(cut, ends)
        age_s = None if oldest is None else time.time() - oldest / 1000
        reason = reason_to_retrain(new, age_s, self.thresholds)
        if reason is None:
            return None
        request = RetrainRequest(
            request_id=wanted,
            production_version=self.registry.production(),
            feedback_cut={str(p): o for p, o in sorted(cut.items())},
            new_events=new,
            oldest_new_event=None if oldest is None else _datetime(oldest),
            reason=reason,
        )
        self._send(request)
        log.info("retrain requested (%s): %s", request.request_id, reason)
        return request

    def close(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                client.close()
        self._consumer = self._producer = None

    # -- Kafka -----------------------------------------------------------------------------

    def _client(self) -> Any:
        from kafka import KafkaConsumer

        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                client_id="recsys-retrain-trigger",
                isolation_level="read_committed",
                bootstrap_timeout_ms=TIMEOUT_MS,
            )
        return self._consumer

    def _partitions(self, topic: str) -> list[Any]:
        from kafka import TopicPartition

        consumer = self._client()
        return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]

    def _end_offsets(self) -> dict[int, int]:
        partitions = self._partitions(FEEDBACK.name)
        return {tp.partition: o for tp, o in self._client().end_offsets(partitions).items()}

    def _read_at(self, tp: Any, offset: int) -> Any:
        """The record at ``offset`` of ``tp`` (or the first after it), or ``None``."""
        consumer = self._client()
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=1).values():
                return records[0]
        return None

    def _last_request(self) -> RetrainRequest | None:
        partitions = self._partitions(RETRAIN_REQUESTS.name)
        if not partitions:
            return None
        tp = partitions[0]
        end = self._client().end_offsets([tp])[tp]
        if end == 0:
            return None
        record = self._read_at(tp, end - 1)
        if record is None:
            return None
        try:
            return RetrainRequest.from_bytes(record.value)
        except InvalidRequest:
            return None

    def _oldest_new_ms(self, cut: dict[int, int], ends: dict[int, int]) -> int | None:
        """Broker timestamp (ms) of the oldest event past the cut."""
        stamps = []
        for tp in self._partitions(FEEDBACK.name):
            start = cut.get(tp.partition, 0)
            if ends.get(tp.partition, 0) > start:
                record = self._read_at(tp, start)
                if record is not None:
                    stamps.append(record.timestamp)
        return min(stamps) if stamps else None

    def _send(self, request: RetrainRequest) -> None:
        from kafka import KafkaProducer

        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=True,
                client_id="recsys-retrain-trigger",
                max_block_ms=TIMEOUT_MS,
            )
        key = (request.production_version or "none").encode()
        self._producer.send(RETRAIN_REQUESTS.name, key=key, value=request.to_bytes()).get(
            timeout=TIMEOUT_MS / 1000
        )


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
