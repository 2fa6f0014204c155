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

from recsys.errors import InvalidRequest
from recsys.events.schemas import UserUpdate
from recsys.events.topics import USER_UPDATES
from serving.follow import TopicFollower

log = logging.getLogger(__name__)


class UserOverlay:
    """The latest :class:`UserUpdate` of each listener, kept current from Kafka."""

    def __init__(self, bootstrap: str | None) -> None:
        self._state: dict[str, UserUpdate] = {}
        self.applied = 0
        self.follower = (
            TopicFollower(bootstrap, USER_UPDATES.name, self._apply_bytes, from_beginning=True)
            if bootstrap
            else None
        )

    def get(self, user_id: str) -> UserUpdate | None:
        return self._state.get(user_id)

    def apply(self, update: UserUpdate) -> None:
        self._state[update.user_id] = update
        self.applied += 1

    def start(self) -> None:
        if self.follower:
            self.follower.start()

    def stop(self) -> None:
        if self.follower:
            self.follower.stop()

    def _apply_bytes(self, value: bytes) -> None:
        try:
            self.apply(UserUpdate.from_bytes(value))
        except InvalidRequest as exc:
            log.warning("user-updates: skipped an invalid update (%s)", exc.message)
