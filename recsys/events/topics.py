"""The Kafka topics of the feedback loop: names, partitions and retention, set explicitly.

Pure data: the launcher and the admin client (``streams/``) create them from here, and
every producer and consumer names them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FOREVER = -1
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Topic:
    """One topic and how it is kept."""

    name: str
    partitions: int
    retention_ms: int
    key: str
    """What messages are keyed by (for ordering per key)."""
    compacted: bool = False
    config: dict[str, str] = field(default_factory=dict)

    def configs(self) -> dict[str, str]:
        """Topic-level settings for the admin client."""
        out = {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": "compact" if self.compacted else "delete",
        }
        return out | self.config


FEEDBACK = Topic("feedback", partitions=4, retention_ms=FOREVER, key="user_id")
"""The source of truth for retraining: kept forever unless configured otherwise."""
SERVED = Topic("recommendations-served", partitions=4, retention_ms=30 * DAY_MS, key="user_id")
MODEL_EVENTS = Topic("model-events", partitions=1, retention_ms=FOREVER, key="version")
USER_UPDATES = Topic("user-updates", partitions=4, retention_ms=FOREVER, key="user_id", compacted=True)
"""Latest state per user (compacted), so a new serving replica can catch up."""
RETRAIN_REQUESTS = Topic("retrain-requests", partitions=1, retention_ms=30 * DAY_MS, key="production_version")
DEAD_LETTER = Topic("feedback-dead-letter", partitions=1, retention_ms=30 * DAY_MS, key="source_topic")

ALL = (FEEDBACK, SERVED, MODEL_EVENTS, USER_UPDATES, RETRAIN_REQUESTS, DEAD_LETTER)
