"""A background thread that follows one Kafka topic and hands each message to a callback.

Used for ``user-updates`` (read from the start: the compacted topic is the state) and
``model-events`` (read from the end: an event only says "look at the registry now").
It reads uncommitted messages, so it sees a stream worker's writes as soon as they are
made; it retries while the broker is away (checking first that the broker's port is open,
and waiting longer after each failure) and never stops the API from serving. The broker
going away and coming back is logged once each (and counted in
``recsys_background_errors_total``); a message its callback fails on is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from recsys.errors import backbone_failures
from serving.background import FailureStreak
from serving.kafka_logs import quiet_kafka_logs

log = logging.getLogger(__name__)
RETRY_S, MAX_RETRY_S = 2.0, 30.0
"""First wait after a failure, doubled after each further one up to the maximum."""
POLL_MS = 200
PROBE_TIMEOUT_S = 1.0
BOOTSTRAP_TIMEOUT_S = 5.0
LIVENESS_CHECK_S = 5.0
"""While no message arrives, how often the broker's port is checked (the consumer itself
reconnects quietly, so this is what tells that the broker went away and came back)."""


class TopicFollower:
    """Calls ``handle(value)`` for every message of ``topic`` on a daemon thread.

    Each connection runs an aiokafka consumer on an event loop of the thread's own
    (:func:`asyncio.run`); the callback runs on that thread.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of a broker.
    topic : str
        Topic to follow, all partitions.
    handle : callable
        Called with each message value (``None`` for a tombstone is skipped).
    from_beginning : bool
        Start at the oldest retained message instead of the end.
    """

    def __init__(
        self, bootstrap: str, topic: str, handle: Callable[[bytes], None], *, from_beginning: bool
    ) -> None:
        self.bootstrap, self.topic, self.handle = bootstrap, topic, handle
        self.from_beginning = from_beginning
        self.following = threading.Event()
        """Set once the follower is assigned and positioned (tests wait on it)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow-{topic}", daemon=True)
        self.broker = FailureStreak(
            self._thread.name,
            first_s=RETRY_S,
            max_s=MAX_RETRY_S,
            then=f"the API serves on; reconnecting to {bootstrap} with backoff",
            logger=log,
        )
        """Failures to reach the broker (to connect, or the port check while following)."""
        self.handling = FailureStreak(self._thread.name, then="skipping the message", logger=log)
        """Messages the callback failed on."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                broker_listens(self.bootstrap)
                asyncio.run(self._follow())
            except Exception as exc:  # the broker may be away; keep serving and retry
                self._stop.wait(self.broker.failed(exc))

    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer

        quiet_kafka_logs()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            client_id=f"recsys-serving-{self.topic}",
        )
        try:
            with backbone_failures(f"cannot follow {self.topic} at {self.bootstrap}"):
                await asyncio.wait_for(consumer.start(), BOOTSTRAP_TIMEOUT_S)
                await self._position(consumer)
            self.following.set()
            self.broker.succeeded()
            await self._consume(consumer)
        finally:
            self.following.clear()
            await consumer.stop()

    async def _position(self, consumer: Any) -> None:
        """Assign every partition of the topic and seek to its start, or its end."""
        from aiokafka import TopicPartition

        await consumer._client.add_topic(self.topic)  # the consumer knows only the topics it was told of
        partitions = [TopicPartition(self.topic, p) for p in consumer.partitions_for_topic(self.topic) or ()]
        if not partitions:
            raise RuntimeError(f"topic {self.topic} does not exist yet")
        consumer.assign(partitions)
        if self.from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
            for partition in partitions:
                await consumer.position(partition)  # resolve "end" now, not at the first poll

    async def _consume(self, consumer: Any) -> None:
        """Hand over messages until stopped; while none arrive, check now and then that the broker listens."""
        checked = time.monotonic()
        while not self._stop.is_set():
            batches = await consumer.getmany(timeout_ms=POLL_MS)
            for records in batches.values():
                for record in records:
                    if record.value is not None:
                        self._deliver(record.value)
            if batches:
                checked = time.monotonic()
                self.broker.succeeded()  # messages arrive: the broker is there
            elif time.monotonic() - checked >= LIVENESS_CHECK_S:
                checked = time.monotonic()
                self._check_broker()

    def _check_broker(self) -> None:
        try:
            broker_listens(self.bootstrap)
        except OSError as exc:  # the consumer reconnects by itself; this only says so, once
            self.broker.failed(exc)
        else:
            self.broker.succeeded()

    def _deliver(self, value: bytes) -> None:
        try:
            self.handle(value)
        except Exception as exc:  # one bad message must not stop the topic
            self.handling.failed(exc)
        else:
            self.handling.succeeded()


def broker_listens(bootstrap: str) -> None:
    """Raise ``OSError`` unless one of the ``host:port`` addresses accepts a connection.

    A Kafka client that cannot reach its broker keeps its network thread busy retrying for
    its whole bootstrap timeout, which costs a server's requests their latency; a plain TCP
    connection tells a closed port in a millisecond.
    """
    errors = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            socket.create_connection(
                (host.strip("[]") or "127.0.0.1", int(port)), timeout=PROBE_TIMEOUT_S
            ).close()
            return
        except (OSError, ValueError) as exc:
            errors.append(f"{address}: {exc}")
    raise OSError(f"no broker at {'; '.join(errors)}")
