"""The API against a real broker that dies and comes back: feedback fails fast while it is away,
flows again once it is back, and the outage is told in a couple of lines."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from deploy.kafka_launcher import LocalKafka
from recsys.registry.store import FileRegistry
from serving import follow
from serving.app import create_app
from serving.settings import ServingSettings
from tests.integration.conftest import running_broker
from tests.keys import authorised
from training.pipeline import TrainResult

LOVE = {"user_id": "u1", "track_id": "tr1", "type": "love"}


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of this module's own: the test kills it."""
    yield from running_broker(tmp_path_factory)


def wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_feedback_fails_fast_while_the_broker_is_away_and_flows_again_after(
    own_broker: LocalKafka,
    trained: tuple[FileRegistry, TrainResult],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(follow, "LIVENESS_CHECK_S", 0.5)
    settings = ServingSettings(
        registry=trained[0].root,
        feedback_sink=f"kafka://{own_broker.bootstrap}",
        kafka_bootstrap=own_broker.bootstrap,
        feedback_timeout_s=3.0,
        feedback_breaker_cool_down_s=1.0,
        reload_interval_s=0,
    )
    with (
        caplog.at_level(logging.INFO),
        TestClient(create_app(settings), headers=authorised(settings.registry)) as client,
    ):
        overlay = client.app.state.overlay  # type: ignore[attr-defined]
        wait_for(overlay.follower.following.is_set, 20)
        assert client.post("/v1/feedback", json=LOVE).status_code == 202

        own_broker.kill()
        started = time.perf_counter()
        assert client.post("/v1/feedback", json=LOVE).status_code == 503
        assert time.perf_counter() - started < 2 * settings.feedback_timeout_s
        timings = []
        for _ in range(10):
            started = time.perf_counter()
            assert client.post("/v1/feedback", json=LOVE).status_code == 503
            timings.append(time.perf_counter() - started)
        assert statistics.median(timings) < 0.1, timings
        wait_for(lambda: overlay.follower.broker.failures > 0, 10)

        own_broker.start(timeout_s=60)
        wait_for(lambda: client.post("/v1/feedback", json=LOVE).status_code == 202, 30)
        wait_for(lambda: overlay.follower.broker.failures == 0, 15)
        metrics = client.get("/metrics").text
    assert "recsys_feedback_breaker_state 0.0" in metrics
    breaker = [r.levelname for r in caplog.records if r.name == "serving.breaker"]
    assert breaker == ["WARNING", "INFO"]
    user_updates = [
        r.levelname
        for r in caplog.records
        if r.name == "serving.follow" and r.getMessage().startswith("follow-user-updates")
    ]
    assert user_updates == ["WARNING", "INFO"]
    kafka_lines = [
        r for r in caplog.records if r.name.startswith("aiokafka") and r.levelno >= logging.WARNING
    ]
    assert len(kafka_lines) < 25, [r.getMessage() for r in kafka_lines]
