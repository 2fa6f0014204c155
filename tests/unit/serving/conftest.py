"""The API's unit tests run without a broker: the Kafka followers are off unless a test turns them on."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_kafka_followers(monkeypatch: pytest.MonkeyPatch) -> None:
    """``RECSYS_FOLLOW_*=false``: settings a test passes itself still win over these."""
    monkeypatch.setenv("RECSYS_FOLLOW_MODEL_EVENTS", "false")
    monkeypatch.setenv("RECSYS_FOLLOW_USER_UPDATES", "false")
