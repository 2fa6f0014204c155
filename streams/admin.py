"""Topic administration with aiokafka's admin client: create the loop's topics with their settings.

Both calls are synchronous: each runs its admin client on an event loop of its own
(:func:`asyncio.run`), so they must not be called from a running event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from recsys.errors import backbone_error, backbone_failures
from recsys.events.topics import ALL, Topic

log = logging.getLogger(__name__)
PROBE_TIMEOUT_MS = 3000
ADMIN_TIMEOUT_MS = 15000


def broker_answers(bootstrap: str) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request."""
    try:
        return asyncio.run(_answers(bootstrap))
    except Exception as exc:
        if backbone_error(exc, "probe") is None:
            raise
        return False


async def _answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=PROBE_TIMEOUT_MS, client_id="recsys-probe"
    )
    try:
        async with asyncio.timeout(2 * PROBE_TIMEOUT_MS / 1000):
            await admin.start()
            await admin.list_topics()
        return True
    finally:
        await admin.close()


def create_topics(bootstrap: str, topics: tuple[Topic, ...] = ALL) -> list[str]:
    """Create the topics that do not exist yet; returns the names created.

    Raises
    ------
    BackboneUnavailable
        When the broker cannot be reached or refuses a topic.
    """
    with backbone_failures(f"cannot create the topics at {bootstrap}"):
        return asyncio.run(_create(bootstrap, topics))


async def _create(bootstrap: str, topics: tuple[Topic, ...]) -> list[str]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="recsys-admin", request_timeout_ms=ADMIN_TIMEOUT_MS
    )
    try:
        async with asyncio.timeout(2 * ADMIN_TIMEOUT_MS / 1000):
            await admin.start()
            existing = set(await admin.list_topics())
            new = [
                NewTopic(t.name, num_partitions=t.partitions, replication_factor=1, topic_configs=t.configs())
                for t in topics
                if t.name not in existing
            ]
            if new:
                _raise_errors(await admin.create_topics(new))
                log.info("created topics %s", ", ".join(t.name for t in new))
        return [t.name for t in new]
    finally:
        await admin.close()


def _raise_errors(response: Any) -> None:
    """Raise the first topic error of a create-topics response, except "already exists"
    (the topic was created meanwhile by another process)."""
    for topic, code, *message in response.topic_errors:
        error = for_code(code)
        if code and error is not TopicAlreadyExistsError:
            raise error(f"{topic}: {message[0] if message and message[0] else error.message}")
