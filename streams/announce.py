"""The ``kafka`` announcer: registry changes as :class:`~recsys.events.ModelEvent` on ``model-events``.

Installed as the ``kafka`` entry point of ``recsys.announcers``, so any process that
changes the registry (the CLI, the API's admin routes, the trainer) announces through
it when ``RECSYS_MODEL_EVENTS=kafka://host:port``.
"""

from __future__ import annotations

import threading
from typing import Any

from recsys.events import ModelEvent
from recsys.topics import MODEL_EVENTS

SEND_TIMEOUT_S = 5.0
"""How long an announcement waits for the broker (the registry change is already committed)."""


class KafkaAnnouncer:
    """An idempotent ``acks=all`` producer to ``model-events``, created on first use.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of a broker.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: Any = None
        self._lock = threading.Lock()

    def __call__(self, event: ModelEvent) -> None:
        producer = self._connect()
        key = (event.version or "rollout").encode()
        producer.send(MODEL_EVENTS.name, key=key, value=event.to_bytes()).get(timeout=SEND_TIMEOUT_S)

    def _connect(self) -> Any:
        from kafka import KafkaProducer

        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    enable_idempotence=True,
                    client_id="recsys-announcer",
                    max_block_ms=int(SEND_TIMEOUT_S * 1000),
                    request_timeout_ms=int(SEND_TIMEOUT_S * 1000),
                )
            return self._producer

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=2)
                self._producer = None
