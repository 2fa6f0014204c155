"""The retrain trigger: one ``retrain-requests`` event per feedback cut, whoever runs it.

Run by the stream worker's leader on a timer. Each check compares the feedback log's end
offsets with the registry's latest feedback cut (:mod:`recsys.registry.retrain_cut`); when the
thresholds say so it emits a :class:`~recsys.events.schemas.RetrainRequest` whose id is derived
from the cut. Before emitting it reads the last request on the (single-partition) topic:
if that one already names the same cut, nothing is sent. So a restarted worker, or a new
leader after a rebalance, does not ask again; once the trainer registers a version past
the cut, the cut moves and counting starts over.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from recsys.errors import BackboneUnavailable, InvalidRequest, backbone_failures
from recsys.events.loop_thread import LoopThread
from recsys.events.schemas import RetrainRequest
from recsys.events.topics import FEEDBACK, RETRAIN_REQUESTS
from recsys.registry.retrain_cut import (
    Thresholds,
    feedback_cut,
    new_events,
    reason_to_retrain,
    request_id,
    retrained_under_test,
)
from recsys.registry.store import FileRegistry

log = logging.getLogger(__name__)
TIMEOUT_MS = 10_000
CLOSE_TIMEOUT_S = 5.0


class RetrainTrigger:
    """Checks the feedback log against the registry and emits retrain requests.

    Its consumer and producer live on an event loop of their own (:class:`.LoopThread`,
    started by the first check), so :meth:`check` can be called from any thread.

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
        self._loop: LoopThread | None = None
        self._lock = threading.Lock()

    def check(self) -> RetrainRequest | None:
        """Emit a request if one is due and not already on the topic; returns what was sent.

        Raises
        ------
        BackboneUnavailable
            When the broker cannot be reached or does not confirm the request.
        """
        with self._lock:
            if self._loop is None:
                self._loop = LoopThread("retrain-trigger")
            with backbone_failures(f"the retrain trigger got no answer from {self.bootstrap}"):
                return self._loop.run(self._check())

    async def _check(self) -> RetrainRequest | None:
        busy = retrained_under_test(self.registry.rollout())
        if busy is not None:
            log.debug("no retraining while experiment %s runs", busy)
            return None
        cut = feedback_cut(self.registry)
        ends = await self._end_offsets()
        new = new_events(cut, ends)
        if new == 0:
            return None
        wanted = request_id(cut)
        last = await self._last_request()
        if last is not None and last.request_id == wanted:
            return None
        oldest = await self._oldest_new_ms(cut, ends)
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
        await self._send(request)
        log.info("retrain requested (%s): %s", request.request_id, reason)
        return request

    def close(self) -> None:
        """Stop the consumer, the producer and their loop; the next check starts them again."""
        with self._lock:
            loop, self._loop = self._loop, None
            if loop is None:
                return
            try:
                loop.run(self._stop_clients(), CLOSE_TIMEOUT_S)
            except (TimeoutError, BackboneUnavailable) as exc:
                log.debug("retrain trigger: clients not stopped cleanly: %s", exc)
            finally:
                loop.close()

    async def _stop_clients(self) -> None:
        clients = (self._consumer, self._producer)
        self._consumer = self._producer = None
        with backbone_failures("the retrain trigger's clients did not stop"):
            for client in clients:
                if client is not None:
                    await client.stop()

    # -- Kafka -----------------------------------------------------------------------------

    async def _client(self) -> Any:
        from aiokafka import AIOKafkaConsumer

        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                client_id="recsys-retrain-trigger",
                isolation_level="read_committed",
                request_timeout_ms=TIMEOUT_MS,
            )
            await _started(consumer)
            self._consumer = consumer
        return self._consumer

    async def _partitions(self, topic: str) -> list[Any]:
        from aiokafka import TopicPartition

        consumer = await self._client()
        await consumer._client.add_topic(topic)  # the consumer knows only the topics it was told of
        return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]

    async def _end_offsets(self) -> dict[int, int]:
        partitions = await self._partitions(FEEDBACK.name)
        if not partitions:
            return {}
        consumer = await self._client()
        return {tp.partition: o for tp, o in (await consumer.end_offsets(partitions)).items()}

    async def _read_at(self, tp: Any, offset: int) -> Any:
        """The record at ``offset`` of ``tp`` (or the first after it), or ``None``."""
        consumer = await self._client()
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(tp, timeout_ms=500, max_records=1)).values():
                return records[0]
        return None

    async def _last_request(self) -> RetrainRequest | None:
        partitions = await self._partitions(RETRAIN_REQUESTS.name)
        if not partitions:
            return None
        tp = partitions[0]
        end = (await (await self._client()).end_offsets([tp]))[tp]
        if end == 0:
            return None
        record = await self._read_at(tp, end - 1)
        if record is None:
            return None
        try:
            return RetrainRequest.from_bytes(record.value)
        except InvalidRequest:
            return None

    async def _oldest_new_ms(self, cut: dict[int, int], ends: dict[int, int]) -> int | None:
        """Broker timestamp (ms) of the oldest event past the cut."""
        stamps = []
        for tp in await self._partitions(FEEDBACK.name):
            start = cut.get(tp.partition, 0)
            if ends.get(tp.partition, 0) > start:
                record = await self._read_at(tp, start)
                if record is not None:
                    stamps.append(record.timestamp)
        return min(stamps) if stamps else None

    async def _send(self, request: RetrainRequest) -> None:
        from aiokafka import AIOKafkaProducer

        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=True,
                client_id="recsys-retrain-trigger",
                request_timeout_ms=TIMEOUT_MS,
            )
            await _started(producer)
            self._producer = producer
        key = (request.production_version or "none").encode()
        await asyncio.wait_for(
            self._producer.send_and_wait(RETRAIN_REQUESTS.name, request.to_bytes(), key=key),
            TIMEOUT_MS / 1000,
        )


async def _started(client: Any) -> None:
    """Start an aiokafka client within :data:`TIMEOUT_MS`; stop it again if it does not start."""
    try:
        await asyncio.wait_for(client.start(), TIMEOUT_MS / 1000)
    except BaseException:
        await client.stop()
        raise


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
