"""The impression log of the serving process: ``kafka://host:port`` writes ``recommendations-served``.

Every served list goes to the topic keyed by user, so feedback can later be credited to the
version and arm that produced it. Writing never delays or fails a recommendation: the
producer sends in the background (``acks=1``, batched), and a broker that is away only
costs the impressions of that time (counted in ``recsys_impressions_dropped_total``).
The producer is built by a background thread that retries, with backoff, until the broker
answers. Other URLs are the core's backends (:func:`recsys.events.impressions.open_log`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

from recsys.errors import BackboneUnavailable, backbone_failures
from recsys.events.impressions import Impression, ImpressionLog, open_log
from recsys.events.loop_thread import LoopThread
from recsys.events.topics import SERVED
from serving.background import FailureStreak
from serving.follow import broker_listens
from serving.kafka_logs import quiet_kafka_logs
from serving.metrics import IMPRESSIONS_DROPPED

log = logging.getLogger(__name__)
METADATA_TRIES, METADATA_WAIT_S = 100, 0.1
"""How long a new producer may take to learn the topic's partitions before it is retried."""
BOOTSTRAP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_MS = 30_000
CLOSE_TIMEOUT_S = 5.0


class KafkaImpressionLog:
    """Impressions to the ``recommendations-served`` topic, fire and forget.

    The producer lives on an event loop of its own (:class:`.LoopThread`), where it
    connects, retrying with backoff while the broker is away; until it is ready impressions
    are dropped and counted, never waited for. :meth:`emit` only hands the impression to
    that loop.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: Any = None
        self._sending: set[asyncio.Task[None]] = set()
        """Sends handed to the loop and not yet queued in the producer (held until then)."""
        self._loop = LoopThread("impressions")
        self.streak = FailureStreak(
            "impressions",
            then=f"impressions are dropped (and counted) until {bootstrap} answers; retrying with backoff",
            logger=log,
        )
        self._connecting: concurrent.futures.Future[None] = self._loop.submit(self._run())

    def emit(self, impression: Impression) -> None:
        producer = self._producer
        if producer is None:
            IMPRESSIONS_DROPPED.inc()
            return
        key, value = impression.user_id.encode(), impression.model_dump_json().encode()
        self._loop.call_soon(self._send_soon, producer, key, value)

    async def _run(self) -> None:
        """Connect, waiting longer after each failure, until a producer is ready."""
        while True:
            try:
                await asyncio.to_thread(broker_listens, self.bootstrap)
                self._producer = await self._connect()
            except Exception as exc:  # the broker may be away: impressions wait, requests do not
                await asyncio.sleep(self.streak.failed(exc))
            else:
                self.streak.succeeded()
                return

    async def _connect(self) -> Any:
        from aiokafka import AIOKafkaProducer

        quiet_kafka_logs()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks=1,
            linger_ms=20,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            client_id="recsys-serving-impressions",
        )
        try:
            with backbone_failures(f"no event backbone at {self.bootstrap}"):
                await asyncio.wait_for(producer.start(), BOOTSTRAP_TIMEOUT_S)
                # the topic's metadata first, so that sends never wait for it
                await asyncio.wait_for(producer.partitions_for(SERVED.name), METADATA_TRIES * METADATA_WAIT_S)
        except BaseException:
            await producer.stop()
            raise
        return producer

    def close(self) -> None:
        self._connecting.cancel()
        try:
            self._loop.run(self._stop_producer(), CLOSE_TIMEOUT_S)
        except (TimeoutError, BackboneUnavailable) as exc:
            log.warning("the impression producer did not stop cleanly: %s", exc)
        finally:
            self._loop.close()

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with backbone_failures("the impression producer did not flush"):
                await producer.stop()

    def _send_soon(self, producer: Any, key: bytes, value: bytes) -> None:
        """On the producer's loop: send one impression; a failure only counts it as dropped."""
        task = asyncio.ensure_future(_send(producer, key, value))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)


async def _send(producer: Any, key: bytes, value: bytes) -> None:
    try:
        delivery = await producer.send(SERVED.name, value=value, key=key)
    except Exception:  # a full buffer or a stopped producer: the impression is lost, not waited for
        IMPRESSIONS_DROPPED.inc()
        return
    delivery.add_done_callback(_count_if_lost)


def _count_if_lost(delivery: asyncio.Future[Any]) -> None:
    if delivery.cancelled() or delivery.exception() is not None:
        IMPRESSIONS_DROPPED.inc()


def open_impressions(url: str) -> ImpressionLog:
    """``kafka://host:port``, or any URL :func:`recsys.events.impressions.open_log` knows."""
    if url.startswith("kafka://"):
        return KafkaImpressionLog(url.removeprefix("kafka://"))
    return open_log(url)
