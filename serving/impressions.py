"""The impression log of the serving process: ``kafka://host:port`` writes ``recommendations-served``.

Every served list goes to the topic keyed by user, so feedback can later be credited to the
version and arm that produced it. Writing never delays or fails a recommendation: the
producer sends in the background (``acks=1``, batched), and a broker that is away only
costs the impressions of that time (counted in ``recsys_impressions_dropped_total``).
Other URLs are the core's backends (:func:`recsys.impressions.open_log`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from recsys.impressions import Impression, ImpressionLog, open_log
from recsys.topics import SERVED
from serving.metrics import IMPRESSIONS_DROPPED

log = logging.getLogger(__name__)


class KafkaImpressionLog:
    """Impressions to the ``recommendations-served`` topic, fire and forget.

    The producer connects in a background thread; until it is ready (or while the broker
    is away) impressions are dropped and counted, never waited for.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: Any = None
        self._thread = threading.Thread(target=self._connect, name="impressions", daemon=True)
        self._thread.start()

    def emit(self, impression: Impression) -> None:
        from kafka.errors import KafkaError

        producer = self._producer
        if producer is None:
            IMPRESSIONS_DROPPED.inc()
            return
        try:
            future = producer.send(
                SERVED.name, key=impression.user_id.encode(), value=impression.model_dump_json().encode()
            )
        except KafkaError:
            IMPRESSIONS_DROPPED.inc()
            return
        future.add_errback(lambda _exc: IMPRESSIONS_DROPPED.inc())

    def _connect(self) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            producer = KafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks=1,
                linger_ms=20,
                max_block_ms=0,
                bootstrap_timeout_ms=10_000,
                client_id="recsys-serving-impressions",
            )
        except KafkaError as exc:
            log.error("impressions will not reach Kafka at %s: %s", self.bootstrap, exc)
            return
        for _ in range(100):  # the topic's metadata first, so that sends never block
            try:
                producer.partitions_for(SERVED.name)
                self._producer = producer
                return
            except KafkaError:
                time.sleep(0.1)
        log.error("impressions will not reach Kafka: no metadata for %s", SERVED.name)
        producer.close(timeout=0)

    def close(self) -> None:
        self._thread.join(timeout=15)
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=5)


def open_impressions(url: str) -> ImpressionLog:
    """``kafka://host:port``, or any URL :func:`recsys.impressions.open_log` knows."""
    if url.startswith("kafka://"):
        return KafkaImpressionLog(url.removeprefix("kafka://"))
    return open_log(url)
