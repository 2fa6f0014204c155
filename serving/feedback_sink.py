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

from recsys.errors import BackboneUnavailable, backbone_failures
from recsys.events.loop_thread import LoopThread
from recsys.events.schemas import FeedbackEvent
from recsys.events.topics import FEEDBACK
from serving.breaker import BreakerState, CircuitBreaker, CircuitOpen
from serving.follow import broker_listens
from serving.kafka_logs import quiet_kafka_logs
from serving.metrics import FEEDBACK_BREAKER

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_COOL_DOWN_S = 5.0
"""How long feedback is refused after the broker failed, before one request tries it again."""
LINGER_MS = 2
"""How long the producer waits for more events of a partition before it sends a batch."""


class FeedbackSink(Protocol):
    """Makes events durable, or raises :class:`BackboneUnavailable`."""

    async def write(self, events: Sequence[FeedbackEvent]) -> None: ...

    def close(self) -> None: ...


class KafkaFeedbackSink:
    """aiokafka producer to the ``feedback`` topic, keyed by ``user_id``, behind a circuit breaker.

    The producer lives on an event loop of its own (:class:`.LoopThread`, started on the first
    write); each request awaits its write there. It is idempotent and writes with
    ``acks=all``; it reconnects by itself when the broker is back.

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
        self._loop: LoopThread | None = None
        self._lock = threading.Lock()
        self._connecting = asyncio.Lock()
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
                await self._private_loop().run_async(self._write(events, trial))
        except CircuitOpen as exc:
            raise BackboneUnavailable(
                f"the event backbone at {self.bootstrap} failed recently; feedback is refused "
                f"until a trial succeeds (the next in {exc.retry_in_s:.0f} s)"
            ) from exc

    def _private_loop(self) -> LoopThread:
        with self._lock:
            if self._loop is None:
                self._loop = LoopThread("feedback-sink")
            return self._loop

    async def _write(self, events: Sequence[FeedbackEvent], check_port: bool = False) -> None:
        """On the sink's loop: send ``events`` and wait until the broker has confirmed them all.

        A timed-out write leaves the producer as it is: it reconnects when the broker is back.
        An event refused here may still be written later; its event_id makes the client's
        resend harmless.
        """
        producer = await self._connect(check_port=check_port)
        with backbone_failures("the event backbone did not confirm the events"):
            await asyncio.wait_for(_confirmed(producer, events), self.timeout_s)

    async def _connect(self, *, check_port: bool) -> Any:
        """The producer, created on first use; with ``check_port`` (or no producer yet) the
        broker's port is checked first, which tells a closed port in a millisecond."""
        async with self._connecting:
            if check_port or self._producer is None:
                try:
                    await asyncio.to_thread(broker_listens, self.bootstrap)
                except OSError as exc:
                    raise BackboneUnavailable(f"the event backbone is unreachable: {exc}") from exc
            if self._producer is None:
                self._producer = await self._new_producer()
            return self._producer

    async def _new_producer(self) -> Any:
        from aiokafka import AIOKafkaProducer

        quiet_kafka_logs()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=LINGER_MS,
            request_timeout_ms=int(self.timeout_s * 1000),
            client_id="recsys-serving",
        )
        try:
            with backbone_failures(f"no event backbone at {self.bootstrap}"):
                await asyncio.wait_for(producer.start(), self.timeout_s)
        except BaseException:
            await producer.stop()
            raise
        return producer

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            loop.run(self._stop_producer(), self.timeout_s)
        except (TimeoutError, BackboneUnavailable) as exc:
            log.warning("the feedback producer did not stop cleanly: %s", exc)
        finally:
            loop.close()

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with backbone_failures("the feedback producer did not flush"):
                await producer.stop()


async def _confirmed(producer: Any, events: Sequence[FeedbackEvent]) -> None:
    """Send ``events`` to ``feedback`` and wait for the broker's confirmation of each.

    Raises
    ------
    Exception
        The first delivery error (every delivery's outcome is collected, none left unread).
    """
    deliveries = [
        await producer.send(FEEDBACK.name, value=e.to_bytes(), key=e.user_id.encode()) for e in events
    ]
    outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


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
