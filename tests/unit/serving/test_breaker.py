"""The feedback path's circuit breaker: it fails fast while the broker is away, tries one request
after a cool-down, and says so once per change."""

from __future__ import annotations

import asyncio
import logging
import socket
import statistics
import threading
import time
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from fastapi.testclient import TestClient

from recsys.errors import BackboneUnavailable
from recsys.events.schemas import FeedbackEvent
from recsys.registry.store import FileRegistry
from serving.app import create_app
from serving.breaker import BreakerState, CircuitBreaker, CircuitOpen
from serving.feedback_sink import KafkaFeedbackSink
from serving.metrics import REGISTRY
from serving.settings import ServingSettings
from tests.keys import authorised
from training.pipeline import TrainResult


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def breaker_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "serving.breaker" and r.levelno >= logging.INFO
    ]


@pytest.mark.parametrize("cool_down_s", [0.5, 5.0, 30.0])
def test_the_state_machine(caplog: pytest.LogCaptureFixture, cool_down_s: float) -> None:
    clock, seen = Clock(), list[BreakerState]()
    breaker = CircuitBreaker(
        "test", cool_down_s=cool_down_s, failures=(BackboneUnavailable,), on_change=seen.append, clock=clock
    )

    def call(outcome: BaseException | None = None) -> bool:
        with breaker.guard() as trial:
            if outcome is not None:
                raise outcome
        return trial

    with caplog.at_level(logging.DEBUG, logger="serving.breaker"):
        assert call() is False and breaker.state is BreakerState.CLOSED
        with pytest.raises(KeyError):  # not a failure of the guarded service
            call(KeyError("bug"))
        assert breaker.state is BreakerState.CLOSED
        with pytest.raises(BackboneUnavailable):
            call(BackboneUnavailable("no answer"))
        for _ in range(5):  # refused without being tried, however many ask
            with pytest.raises(CircuitOpen):
                call()
        clock.now += cool_down_s / 2
        with pytest.raises(CircuitOpen) as refused:
            call()
        assert refused.value.retry_in_s == pytest.approx(cool_down_s / 2)
        clock.now += cool_down_s / 2
        with pytest.raises(BackboneUnavailable):  # the trial fails: open again for a cool-down
            call(BackboneUnavailable("still no answer"))
        with pytest.raises(CircuitOpen):
            call()
        clock.now += cool_down_s
        with pytest.raises(asyncio.CancelledError):  # a trial abandoned frees its turn
            call(asyncio.CancelledError())
        assert seen[-1] is BreakerState.HALF_OPEN
        assert call() is True  # the next trial succeeds
        assert breaker.state is BreakerState.CLOSED and call() is False
    assert breaker_lines(caplog) == [
        (
            "WARNING",
            "test: circuit open after BackboneUnavailable: no answer; "
            f"calls are refused at once, one is tried every {cool_down_s:.0f} s",
        ),
        ("INFO", "test: circuit closed, calls flow again"),
    ]
    closed, opened, half = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
    assert seen == [closed, opened, half, opened, half, closed]


def test_only_one_trial_at_a_time() -> None:
    clock = Clock()
    breaker = CircuitBreaker("test", cool_down_s=1.0, failures=(BackboneUnavailable,), clock=clock)
    with pytest.raises(BackboneUnavailable), breaker.guard():
        raise BackboneUnavailable("down")
    clock.now += 1.0
    with breaker.guard() as trial:
        assert trial
        with pytest.raises(CircuitOpen), breaker.guard():
            pass  # a second request while the trial is in flight is refused
    assert breaker.state is BreakerState.CLOSED


class FakeProducer:
    """Confirms sends while ``up``; otherwise their deliveries time out, as aiokafka's do with no broker."""

    def __init__(self) -> None:
        self.up, self.sent = False, 0

    async def send(self, topic: str, value: bytes, *, key: bytes) -> asyncio.Future[None]:
        self.sent += 1
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.up:
            delivery.set_result(None)
        else:
            delivery.set_exception(KafkaTimeoutError("no broker confirmed"))
        return delivery

    async def stop(self) -> None:
        return None


class FakeSink(KafkaFeedbackSink):
    def __init__(self, producer: FakeProducer, clock: Clock, cool_down_s: float) -> None:
        super().__init__("127.0.0.1:1", timeout_s=1.0, cool_down_s=cool_down_s, clock=clock)
        self.producer, self.port_checks = producer, 0

    async def _connect(self, *, check_port: bool) -> Any:
        self.port_checks += check_port
        return self.producer


EVENTS = [FeedbackEvent.model_validate({"user_id": "u1", "track_id": "tr1", "type": "love"})]


def gauge() -> float | None:
    return REGISTRY.get_sample_value("recsys_feedback_breaker_state")


@pytest.mark.parametrize(("cool_down_s", "refused"), [(2.0, 3), (10.0, 25)])
def test_the_sink_refuses_at_once_while_open_and_never_accepts_then(
    caplog: pytest.LogCaptureFixture, cool_down_s: float, refused: int
) -> None:
    producer, clock = FakeProducer(), Clock()
    sink = FakeSink(producer, clock, cool_down_s)
    write = asyncio.run
    with caplog.at_level(logging.INFO, logger="serving.breaker"):
        with pytest.raises(BackboneUnavailable, match="did not confirm"):
            write(sink.write(EVENTS))
        assert producer.sent == 1 and gauge() == BreakerState.OPEN
        producer.up = True  # back, but nobody has tried it yet: still refused, never accepted
        for _ in range(refused):
            with pytest.raises(BackboneUnavailable, match="refused until a trial"):
                write(sink.write(EVENTS))
        assert producer.sent == 1 and sink.port_checks == 0
        clock.now += cool_down_s
        write(sink.write(EVENTS))  # the trial: the port first, then the write itself
        assert sink.port_checks == 1 and producer.sent == 2 and gauge() == BreakerState.CLOSED
        for _ in range(refused):
            write(sink.write(EVENTS))
        assert producer.sent == 2 + refused and sink.port_checks == 1
    sink.close()
    assert [level for level, _ in breaker_lines(caplog)] == ["WARNING", "INFO"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


LOVE = {"user_id": "u1", "track_id": "tr1", "type": "love"}


def test_no_broker_costs_one_request_and_one_warning_then_503_at_once(
    trained: tuple[FileRegistry, TrainResult], caplog: pytest.LogCaptureFixture
) -> None:
    timeout_s = 2.0
    settings = ServingSettings(
        registry=trained[0].root,
        feedback_sink=f"kafka://127.0.0.1:{closed_port()}",
        feedback_timeout_s=timeout_s,
        feedback_breaker_cool_down_s=60.0,
        follow_user_updates=False,
        follow_model_events=False,
    )
    headers = authorised(trained[0].root)
    with caplog.at_level(logging.DEBUG), TestClient(create_app(settings), headers=headers) as client:
        started = time.perf_counter()
        first = client.post("/v1/feedback", json=LOVE)
        first_s = time.perf_counter() - started
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            response = client.post("/v1/feedback", json=LOVE)
            timings.append(time.perf_counter() - started)
            assert response.status_code == 503 and response.headers["retry-after"]
            assert response.json()["error"] == "event_backbone_unavailable"
        metrics = client.get("/metrics").text
    assert first.status_code == 503 and first_s < timeout_s
    assert statistics.median(timings) < 0.1, timings
    assert "recsys_feedback_breaker_state 1.0" in metrics
    assert [level for level, _ in breaker_lines(caplog)] == ["WARNING"]
    assert not [r for r in caplog.records if r.name.startswith("aiokafka")]  # no client was even built


def test_the_trial_closes_the_breaker_when_something_listens_again() -> None:
    """A real port: closed at first, then open (the write itself is faked, there is no Kafka here)."""
    port = closed_port()
    sink = KafkaFeedbackSink(f"127.0.0.1:{port}", timeout_s=1.0, cool_down_s=0.2)
    producer = FakeProducer()
    producer.up = True
    with pytest.raises(BackboneUnavailable, match="the event backbone is unreachable: no broker at"):
        asyncio.run(sink.write(EVENTS))
    with pytest.raises(BackboneUnavailable, match="refused until a trial"):
        asyncio.run(sink.write(EVENTS))
    sink._producer = producer  # as built before the broker went away
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        accepting = threading.Thread(target=lambda: server.accept()[0].close(), daemon=True)
        accepting.start()
        time.sleep(0.2)
        asyncio.run(sink.write(EVENTS))
        accepting.join(timeout=5)
    sink.close()
    assert sink.breaker.state is BreakerState.CLOSED and producer.sent == 1
