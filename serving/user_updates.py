"""Every replica follows ``user-updates``: the speed layer's hate sets and vectors per listener.

A background thread reads the whole (compacted) topic from the start, so a new replica
knows every listener's state, then keeps up; recommendations then exclude a listener's
hated tracks and, for a listener with no playlist or seed tracks, start from the fresh
vector. It reads uncommitted messages: an update is applied as soon as the stream worker
writes it, not at its next transaction commit (an update from an aborted transaction is
written again when the worker replays it).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from recsys.errors import InvalidRequest
from recsys.events import UserUpdate
from recsys.topics import USER_UPDATES

log = logging.getLogger(__name__)
RETRY_S = 2.0


class UserOverlay:
    """The latest :class:`UserUpdate` of each listener, kept current from Kafka."""

    def __init__(self, bootstrap: str | None) -> None:
        self.bootstrap = bootstrap
        self._state: dict[str, UserUpdate] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="user-updates", daemon=True)
        self.applied = 0

    def get(self, user_id: str) -> UserUpdate | None:
        return self._state.get(user_id)

    def apply(self, update: UserUpdate) -> None:
        self._state[update.user_id] = update
        self.applied += 1

    def start(self) -> None:
        if self.bootstrap:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:  # the broker may be away; keep serving and retry
                log.warning("user-updates: %s; retrying in %.0fs", exc, RETRY_S)
                self._stop.wait(RETRY_S)

    def _follow(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer: Any = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            client_id="recsys-serving-user-updates",
            bootstrap_timeout_ms=5000,
        )
        try:
            partitions = [
                TopicPartition(USER_UPDATES.name, p)
                for p in consumer.partitions_for_topic(USER_UPDATES.name) or ()
            ]
            if not partitions:
                raise RuntimeError(f"topic {USER_UPDATES.name} does not exist yet")
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    for record in records:
                        self._apply_bytes(record.value)
        finally:
            consumer.close()

    def _apply_bytes(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            self.apply(UserUpdate.from_bytes(value))
        except InvalidRequest as exc:
            log.warning("user-updates: skipped an invalid update (%s)", exc.message)
