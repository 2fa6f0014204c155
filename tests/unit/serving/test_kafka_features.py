"""Each Kafka feature of the API follows its own setting: a memory:// feedback sink leaves the
``model-events`` and ``user-updates`` followers as they are configured, and the start says
which features are on."""

from __future__ import annotations

import logging
import socket

import pytest
from fastapi.testclient import TestClient

from recsys.registry.store import FileRegistry
from serving.app import create_app
from serving.follow import TopicFollower
from serving.settings import ServingSettings
from training.pipeline import TrainResult


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_memory_sink_still_follows_both_topics_on_the_broker_setting(
    trained: tuple[FileRegistry, TrainResult], caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    settings = ServingSettings(
        registry=trained[0].root,
        feedback_sink="memory://",
        kafka_bootstrap=bootstrap,
        follow_model_events=True,
        follow_user_updates=True,
        reload_interval_s=0,
        auth_required=False,
    )
    with caplog.at_level(logging.INFO, logger="serving"), TestClient(create_app(settings)) as client:
        state = client.app.state  # type: ignore[attr-defined]
        model_events, user_updates = state.model_events, state.overlay.follower
        assert isinstance(model_events, TopicFollower) and isinstance(user_updates, TopicFollower)
        assert (model_events.topic, model_events.bootstrap) == ("model-events", bootstrap)
        assert (user_updates.topic, user_updates.bootstrap) == ("user-updates", bootstrap)
        assert model_events._thread.is_alive() and user_updates._thread.is_alive()
        assert client.get("/readyz").status_code == 200  # no broker, the API serves on
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Kafka features:"))
    assert line == (
        "Kafka features: feedback sink off (memory://), impression log off (memory://), "
        f"follow model-events on {bootstrap}, follow user-updates on {bootstrap}"
    )


def test_a_kafka_sink_does_not_turn_the_followers_on(
    trained: tuple[FileRegistry, TrainResult], caplog: pytest.LogCaptureFixture
) -> None:
    sink = f"127.0.0.1:{closed_port()}"
    settings = ServingSettings(
        registry=trained[0].root,
        feedback_sink=f"kafka://{sink}",
        follow_model_events=False,
        follow_user_updates=False,
        reload_interval_s=0,
        auth_required=False,
    )
    with caplog.at_level(logging.INFO, logger="serving"), TestClient(create_app(settings)) as client:
        state = client.app.state  # type: ignore[attr-defined]
        assert state.model_events is None and state.overlay.follower is None
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "Kafka features: feedback sink on "
        f"{sink}, impression log off (memory://), follow model-events off, follow user-updates off"
    ) in messages
    assert not any("but follows" in m for m in messages)


def test_writing_to_one_broker_and_following_another_is_a_warning(
    trained: tuple[FileRegistry, TrainResult], caplog: pytest.LogCaptureFixture
) -> None:
    settings = ServingSettings(
        registry=trained[0].root,
        feedback_sink="memory://",
        impression_log=f"kafka://127.0.0.1:{closed_port()}",
        kafka_bootstrap=f"127.0.0.1:{closed_port()}",
        follow_model_events=False,
        follow_user_updates=True,
        reload_interval_s=0,
        auth_required=False,
    )
    with caplog.at_level(logging.INFO, logger="serving"), TestClient(create_app(settings)):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("but follows user-updates on " + settings.kafka_bootstrap in m for m in warnings)


def test_the_features_name_the_broker_each_one_uses() -> None:
    settings = ServingSettings(
        feedback_sink="kafka://a:9092",
        impression_log="file:///tmp/served.jsonl",
        kafka_bootstrap="b:9092",
        follow_model_events=True,
        follow_user_updates=False,
    )
    assert settings.kafka_features() == {
        "feedback sink": "a:9092",
        "impression log": None,
        "follow model-events": "b:9092",
        "follow user-updates": None,
    }
