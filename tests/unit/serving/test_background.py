"""Background failures: logged once per streak, counted, spaced out; the Kafka client's repeats dropped."""

from __future__ import annotations

import json
import logging

import pytest

from serving.background import FailureStreak
from serving.kafka_logs import KAFKA_FILTER, FirstOfEach, quiet_kafka_logs
from serving.metrics import REGISTRY


def errors_of(task: str) -> float:
    return REGISTRY.get_sample_value("recsys_background_errors_total", {"task": task}) or 0.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("first_s", "max_s", "failures"), [(1.0, 30.0, 9), (0.05, 0.2, 6), (2.0, 16.0, 7)])
def test_one_warning_per_streak_every_failure_counted_and_the_wait_doubles_to_its_cap(
    caplog: pytest.LogCaptureFixture, first_s: float, max_s: float, failures: int
) -> None:
    task = f"test-streak-{first_s}-{max_s}"
    streak = FailureStreak(task, first_s=first_s, max_s=max_s, then="trying later", clock=Clock())
    assert errors_of(task) == 0.0  # the series exists before any failure
    with caplog.at_level(logging.DEBUG, logger="serving.background"):
        waits = [streak.failed(json.JSONDecodeError("Expecting value", "{", 1)) for _ in range(failures)]
        streak.succeeded()
        streak.succeeded()  # nothing to report twice
        streak.failed(OSError("gone"))
    assert waits == [min(first_s * 2**i, max_s) for i in range(failures)]
    assert errors_of(task) == failures + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{task}: JSONDecodeError: Expecting value: line 1 column 2 (char 1) "
        "(trying later; logged once until it recovers)",
        f"{task}: OSError: gone (trying later; logged once until it recovers)",
    ]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [f"{task}: recovered after {failures} failures in 0 s"]


def test_a_very_long_streak_keeps_its_wait_at_the_cap() -> None:
    streak = FailureStreak("test-long-streak", first_s=1.0, max_s=30.0)
    for _ in range(5000):
        wait = streak.failed(RuntimeError("still"))
    assert wait == 30.0


@pytest.mark.parametrize("window_s", [1.0, 60.0])
def test_a_repeated_message_passes_once_per_window(window_s: float) -> None:
    clock = Clock()
    only_once = FirstOfEach(window_s, clock=clock)

    def record(msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", level, __file__, 1, msg, args, None)

    template = "Unable connect to node with id %s: %s"
    assert only_once.filter(record(template, "bootstrap-0", "refused"))
    assert not only_once.filter(record(template, "bootstrap-1", "refused"))  # same template
    assert only_once.filter(record(template, "bootstrap-0", "refused", level=logging.ERROR))
    assert only_once.filter(record("Connection lost: %s", "refused"))
    clock.now += window_s / 2
    assert not only_once.filter(record(template, "bootstrap-0", "refused"))
    clock.now += window_s
    assert only_once.filter(record(template, "bootstrap-0", "refused"))


def test_kafka_loggers_drop_their_repeats(caplog: pytest.LogCaptureFixture) -> None:
    quiet_kafka_logs()
    quiet_kafka_logs()  # idempotent
    manager = logging.getLogger("aiokafka")  # where aiokafka's client logs its connection attempts
    assert manager.filters.count(KAFKA_FILTER) == 1
    assert logging.getLogger("aiokafka.conn").filters.count(KAFKA_FILTER) == 1
    with caplog.at_level(logging.WARNING, logger="aiokafka"):
        for attempt in range(20):
            manager.warning("test-only: node %s not ready; waiting %.2f secs", "bootstrap-0", attempt / 10)
        logging.getLogger("serving.follow").warning("not a kafka logger")
        logging.getLogger("serving.follow").warning("not a kafka logger")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "test-only: node bootstrap-0 not ready; waiting 0.00 secs",
        "not a kafka logger",
        "not a kafka logger",
    ]
