"""A real Apache Kafka broker for the integration tests, started through the project's launcher."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.kafka_launcher import LocalKafka, free_port
from recsys.errors import BackboneUnavailable


def running_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker (KRaft, 127.0.0.1, free ports) until the generator is closed; fails the run with
    its log if it cannot start."""
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port())
    try:
        broker.start(timeout_s=120)
    except BackboneUnavailable as exc:
        broker.stop(timeout_s=5)
        pytest.fail(f"the Kafka broker did not start: {exc.message}", pytrace=False)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """One broker for the session."""
    yield from running_broker(tmp_path_factory)
