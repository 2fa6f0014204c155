"""Where accepted feedback goes: the Kafka topic ``feedback``, written with ``acks=all``.

The API answers 202 only after the broker has confirmed every event of a request, so an
accepted event is durable; when the broker is unreachable or does not confirm in time the
request fails with 503 and ``Retry-After`` and nothing is acknowledged. The producer is
created on first use, so the rest of the API serves whether or not Kafka is up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from recsys.errors import BackboneUnavailable
from recsys.events import FeedbackEvent
from recsys.topics import FEEDBACK

log = logging.getLogger(__name__)


class FeedbackSink(Protocol):
    """Makes events durable, or raises :class:`BackboneUnavailable`."""

    async def write(self, events: Sequence[FeedbackEvent]) -> None: ...

    def close(self) -> None: ...


class KafkaFeedbackSink:
    """kafka-python producer to the ``feedback`` topic, keyed by ``user_id``.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of a broker.
    timeout_s : float
        How long a request waits for the broker's confirmation before it fails with 503.
    """

    def __init__(self, bootstrap: str, *, timeout_s: float = 5.0) -> None:
        self.bootstrap, self.timeout_s = bootstrap, timeout_s
        self._producer: Any = None
        self._lock = threading.Lock()

    async def write(self, events: Sequence[FeedbackEvent]) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._write, events)

    def _write(self, events: Sequence[FeedbackEvent]) -> None:
        from kafka.errors import KafkaError

        producer = self._connect()
        try:
            futures = [
                producer.send(FEEDBACK.name, key=e.user_id.encode(), value=e.to_bytes()) for e in events
            ]
            producer.flush(timeout=self.timeout_s)
            for future in futures:
                future.get(timeout=self.timeout_s)
        except KafkaError as exc:
            # the producer stays: it reconnects when the broker is back. An event refused here
            # may still be written later; its event_id makes the client's resend harmless.
            raise BackboneUnavailable(f"the event backbone did not confirm the events ({exc})") from exc

    def _connect(self) -> Any:
        with self._lock:
            if self._producer is None:
                from kafka import KafkaProducer
                from kafka.errors import KafkaError

                try:
                    self._producer = KafkaProducer(
                        bootstrap_servers=self.bootstrap,
                        acks="all",
                        linger_ms=2,
                        retries=3,
                        enable_idempotence=True,
                        max_block_ms=int(self.timeout_s * 1000),
                        bootstrap_timeout_ms=int(self.timeout_s * 1000),
                        request_timeout_ms=int(self.timeout_s * 1000),
                        client_id="recsys-serving",
                    )
                except KafkaError as exc:
                    raise BackboneUnavailable(f"no event backbone at {self.bootstrap} ({exc})") from exc
            return self._producer

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=self.timeout_s)


class MemoryFeedbackSink:
    """Keeps events in memory (tests, and a service run without an event backbone)."""

    def __init__(self) -> None:
        self.events: list[FeedbackEvent] = []

    async def write(self, events: Sequence[FeedbackEvent]) -> None:
        self.events.extend(events)

    def close(self) -> None:
        return None


def open_sink(url: str, *, timeout_s: float = 5.0) -> FeedbackSink:
    """``kafka://host:port`` or ``memory://``."""
    if url.startswith("kafka://"):
        return KafkaFeedbackSink(url.removeprefix("kafka://"), timeout_s=timeout_s)
    if url == "memory://":
        return MemoryFeedbackSink()
    from recsys.errors import ConfigurationError

    raise ConfigurationError(f"unknown feedback sink {url!r}: use kafka://host:port or memory://")
