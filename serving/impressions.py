"""The impression log of the serving process: ``kafka://host:port`` writes ``recommendations-served``.

Every served list goes to the topic keyed by user, so feedback can later be credited to the
version and arm that produced it. Writing never delays or fails a recommendation: the
producer sends in the background (``acks=1``, batched), and a broker that is away only
costs the impressions of that time (counted in ``recsys_impressions_dropped_total``).
The producer is built by a background thread that retries, with backoff, until the broker
answers. Other URLs are the core's backends (:func:`recsys.impressions.open_log`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from recsys.impressions import Impression, ImpressionLog, open_log
from recsys.topics import SERVED
from serving.background import FailureStreak
from serving.follow import broker_listens
from serving.kafka_logs import quiet_kafka_logs
from serving.metrics import IMPRESSIONS_DROPPED

log = logging.getLogger(__name__)
METADATA_TRIES, METADATA_WAIT_S = 100, 0.1
"""How long a new producer may take to learn the topic's partitions before it is retried."""


class KafkaImpressionLog:
    """Impressions to the ``recommendations-served`` topic, fire and forget.

    The producer connects in a background thread, retrying with backoff while the broker is
    away; until it is ready impressions are dropped and counted, never waited for.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)
        self.streak = FailureStreak(
            self._thread.name,
            then=f"impressions are dropped (and counted) until {bootstrap} answers; retrying with backoff",
            logger=log,
        )
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

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                broker_listens(self.bootstrap)
                self._producer = self._connect()
            except Exception as exc:  # the broker may be away: impressions wait, requests do not
                self._stop.wait(self.streak.failed(exc))
            else:
                self.streak.succeeded()
                return

    def _connect(self) -> Any:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        quiet_kafka_logs()
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks=1,
            linger_ms=20,
            max_block_ms=0,
            bootstrap_timeout_ms=10_000,
            client_id="recsys-serving-impressions",
        )
        for _ in range(METADATA_TRIES):  # the topic's metadata first, so that sends never block
            try:
                producer.partitions_for(SERVED.name)
                return producer
            except KafkaError:
                if self._stop.wait(METADATA_WAIT_S):
                    break
        producer.close(timeout=0)
        raise RuntimeError(f"no metadata for {SERVED.name}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=5)


def open_impressions(url: str) -> ImpressionLog:
    """``kafka://host:port``, or any URL :func:`recsys.impressions.open_log` knows."""
    if url.startswith("kafka://"):
        return KafkaImpressionLog(url.removeprefix("kafka://"))
    return open_log(url)
