"""The ``kafka`` announcer: registry changes as :class:`.ModelEvent` on ``model-events``.

Installed as the ``kafka`` entry point of ``recsys.announcers``, so any process that
changes the registry (the CLI, the API's admin routes, the trainer) announces through
it when ``RECSYS_MODEL_EVENTS=kafka://host:port``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from recsys.errors import BackboneUnavailable, backbone_failures
from recsys.events.loop_thread import LoopThread
from recsys.events.schemas import ModelEvent
from recsys.events.topics import MODEL_EVENTS

SEND_TIMEOUT_S = 5.0
"""How long an announcement waits for the broker (the registry change is already committed)."""
CLOSE_TIMEOUT_S = 2.0


class KafkaAnnouncer:
    """An idempotent ``acks=all`` producer to ``model-events``, created on first use.

    The producer lives on an event loop of its own (:class:`.LoopThread`, started with the
    first announcement); each announcement waits there for the broker's confirmation.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of a broker.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: Any = None
        self._loop: LoopThread | None = None
        self._lock = threading.Lock()

    def __call__(self, event: ModelEvent) -> None:
        """Announce ``event``; raises :class:`.BackboneUnavailable` when the broker does not confirm it."""
        key = (event.version or "rollout").encode()
        with self._lock:  # one announcement at a time, in the order of the changes
            if self._loop is None:
                self._loop = LoopThread("announcer")
            self._loop.run(self._announce(key, event.to_bytes()))

    async def _announce(self, key: bytes, value: bytes) -> None:
        with backbone_failures(f"the event backbone at {self.bootstrap} did not confirm the model event"):
            producer = await self._connect()
            await asyncio.wait_for(producer.send_and_wait(MODEL_EVENTS.name, value, key=key), SEND_TIMEOUT_S)

    async def _connect(self) -> Any:
        from aiokafka import AIOKafkaProducer

        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=True,
                client_id="recsys-announcer",
                request_timeout_ms=int(SEND_TIMEOUT_S * 1000),
            )
            try:
                await asyncio.wait_for(producer.start(), SEND_TIMEOUT_S)
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
            if loop is None:
                return
            try:
                loop.run(self._stop_producer(), CLOSE_TIMEOUT_S)
            except (TimeoutError, BackboneUnavailable):
                pass  # the loop's close cancels what is left
            finally:
                loop.close()

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with backbone_failures("the announcer's producer did not stop cleanly"):
                await producer.stop()
