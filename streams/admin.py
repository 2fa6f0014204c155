"""Topic administration with kafka-python: create the loop's topics with their settings."""

from __future__ import annotations

import contextlib
import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from recsys.topics import ALL, Topic

log = logging.getLogger(__name__)


def broker_answers(bootstrap: str) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=3000,
            bootstrap_timeout_ms=3000,
            client_id="recsys-probe",
        )
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


def create_topics(bootstrap: str, topics: tuple[Topic, ...] = ALL) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="recsys-admin",
        request_timeout_ms=15000,
        bootstrap_timeout_ms=15000,
    )
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(t.name, num_partitions=t.partitions, replication_factor=1, topic_configs=t.configs())
            for t in topics
            if t.name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile by another process
                admin.create_topics(new)
            log.info("created topics %s", ", ".join(t.name for t in new))
        return [t.name for t in new]
    finally:
        admin.close()
