"""Where accepted feedback goes: the Kafka topic ``feedback``, written with ``acks=all``.

The API answers 202 only after the broker has confirmed every event of a request, so an
accepted event is durable; when the broker is unreachable or does not confirm in time the
request fails with 503 and ``Retry-After`` and nothing is acknowledged. The producer is
created on first use, so the rest of the API serves whether or not Kafka is up.

A circuit breaker spares the callers the wait while the broker is away: once a request
fails, the following ones are refused with 503 at once (no Kafka client is even asked)
for a cool-down, after which a single trial request (a port check, then the real write)
closes the breaker again or keeps it open. Its state is the gauge
``recsys_feedback_breaker_state``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from recsys.errors import BackboneUnavailable
from recsys.events import FeedbackEvent
from recsys.topics import FEEDBACK
from serving.breaker import BreakerState, CircuitBreaker, CircuitOpen
from serving.follow import broker_listens
from serving.kafka_logs import quiet_kafka_logs
from serving.metrics import FEEDBACK_BREAKER

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_COOL_DOWN_S = 5.0
"""How long feedback is refused after the broker failed, before one request tries it again."""
RECONNECT_BACKOFF_MAX_MS = 1000
"""Longest pause between the producer's reconnection attempts (kafka-python's default is
30 s, which would fail the trial requests for that long after the broker is back)."""


class FeedbackSink(Protocol):
    """Makes events durable, or raises :class:`BackboneUnavailable`."""

    async def write(self, events: Sequence[FeedbackEvent]) -> None: ...

    def close(self) -> None: ...


class KafkaFeedbackSink:
    """kafka-python producer to the ``feedback`` topic, keyed by ``user_id``, behind a circuit breaker.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of a broker.
    timeout_s : float
        How long a request waits for the broker's confirmation before it fails with 503.
    cool_down_s : float
        How long requests are refused at once after a failure, before one is tried.
    clock : callable
        Monotonic seconds, for the breaker (tests pass their own).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        cool_down_s: float = DEFAULT_COOL_DOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bootstrap, self.timeout_s = bootstrap, timeout_s
        self._producer: Any = None
        self._lock = threading.Lock()
        self.breaker = CircuitBreaker(
            f"feedback to {bootstrap}",
            cool_down_s=cool_down_s,
            failures=(BackboneUnavailable,),
            on_change=_show_state,
            clock=clock,
        )

    async def write(self, events: Sequence[FeedbackEvent]) -> None:
        try:
            with self.breaker.guard() as trial:
                await asyncio.get_running_loop().run_in_executor(None, self._write, events, trial)
        except CircuitOpen as exc:
            raise BackboneUnavailable(
                f"the event backbone at {self.bootstrap} failed recently; feedback is refused "
                f"until a trial succeeds (the next in {exc.retry_in_s:.0f} s)"
            ) from exc

    def _write(self, events: Sequence[FeedbackEvent], check_port: bool = False) -> None:
        from kafka.errors import KafkaError

        producer = self._connect(check_port=check_port)
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

    def _connect(self, *, check_port: bool) -> Any:
        """The producer, created on first use; with ``check_port`` (or no producer yet) the
        broker's port is checked first, which tells a closed port in a millisecond."""
        with self._lock:
            if check_port or self._producer is None:
                try:
                    broker_listens(self.bootstrap)
                except OSError as exc:
                    raise BackboneUnavailable(f"the event backbone is unreachable: {exc}") from exc
            if self._producer is None:
                self._producer = self._new_producer()
            return self._producer

    def _new_producer(self) -> Any:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        quiet_kafka_logs()
        try:
            return KafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                linger_ms=2,
                retries=3,
                enable_idempotence=True,
                max_block_ms=int(self.timeout_s * 1000),
                bootstrap_timeout_ms=int(self.timeout_s * 1000),
                request_timeout_ms=int(self.timeout_s * 1000),
                reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
                client_id="recsys-serving",
            )
        except KafkaError as exc:
            raise BackboneUnavailable(f"no event backbone at {self.bootstrap} ({exc})") from exc

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=self.timeout_s)


def _show_state(state: BreakerState) -> None:
    FEEDBACK_BREAKER.set(state.value)


class MemoryFeedbackSink:
    """Keeps events in memory (tests, and a service run without an event backbone)."""

    def __init__(self) -> None:
        self.events: list[FeedbackEvent] = []

    async def write(self, events: Sequence[FeedbackEvent]) -> None:
        self.events.extend(events)

    def close(self) -> None:
        return None


def open_sink(
    url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, cool_down_s: float = DEFAULT_COOL_DOWN_S
) -> FeedbackSink:
    """``kafka://host:port`` or ``memory://``."""
    if url.startswith("kafka://"):
        return KafkaFeedbackSink(url.removeprefix("kafka://"), timeout_s=timeout_s, cool_down_s=cool_down_s)
    if url == "memory://":
        return MemoryFeedbackSink()
    from recsys.errors import ConfigurationError

    raise ConfigurationError(f"unknown feedback sink {url!r}: use kafka://host:port or memory://")
