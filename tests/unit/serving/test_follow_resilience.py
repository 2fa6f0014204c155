"""A topic follower outlives whatever it meets: a failing connection, a failing callback, a broker
that goes away while it follows; each streak is logged once and every failure counted."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from serving import follow
from serving.follow import TopicFollower
from serving.metrics import REGISTRY


def errors_of(task: str) -> float:
    return REGISTRY.get_sample_value("recsys_background_errors_total", {"task": task}) or 0.0


def stop_after(
    monkeypatch: pytest.MonkeyPatch, follower: TopicFollower, count: int, waits: list[float]
) -> None:
    def wait(delay: float | None = None) -> bool:
        assert delay is not None
        waits.append(delay)
        if len(waits) >= count:
            follower._stop.set()
        return follower._stop.is_set()

    monkeypatch.setattr(follower._stop, "wait", wait)


@pytest.mark.parametrize("failures", [1, 4, 7])
def test_any_exception_is_retried_logged_once_and_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, failures: int
) -> None:
    topic = f"test-retry-{failures}"
    follower = TopicFollower("127.0.0.1:1", topic, print, from_beginning=False)
    monkeypatch.setattr(follow, "broker_listens", lambda _bootstrap: None)
    problems: Iterator[Exception] = iter(
        [RuntimeError("topic does not exist yet"), ValueError("bad offset"), KeyError("partition")] * 3
    )
    sessions: list[int] = []

    async def session() -> None:
        sessions.append(1)
        if len(sessions) <= failures:
            raise next(problems)
        follower.following.set()
        follower.broker.succeeded()
        follower._stop.set()

    follower._follow = session  # type: ignore[method-assign]
    waits: list[float] = []
    stop_after(monkeypatch, follower, failures + 1, waits)
    before = errors_of(f"follow-{topic}")
    with caplog.at_level(logging.INFO, logger="serving.follow"):
        follower._run()
    assert len(sessions) == failures + 1 and follower.following.is_set()
    assert waits == [min(2.0 * 2**i, 30.0) for i in range(failures)]
    assert errors_of(f"follow-{topic}") == before + failures
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"follow-{topic}: RuntimeError: topic does not")
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [f"follow-{topic}: recovered after {failures} failures in 0 s"]


class FakeConsumer:
    """Hands out prepared poll results, then stops the follower."""

    def __init__(self, follower: TopicFollower, polls: list[list[bytes | None]]) -> None:
        self.follower, self.polls = follower, list(polls)

    async def getmany(self, timeout_ms: int) -> dict[str, list[Any]]:
        if not self.polls:
            self.follower._stop.set()
            return {}
        values = self.polls.pop(0)
        return {"tp": [SimpleNamespace(value=v) for v in values]} if values else {}


@pytest.mark.parametrize("bad_every", [2, 3])
def test_a_message_the_callback_fails_on_is_skipped_and_the_rest_are_handled(
    caplog: pytest.LogCaptureFixture, bad_every: int
) -> None:
    handled: list[bytes] = []

    def handle(value: bytes) -> None:
        if int(value) % bad_every == 0:
            raise ValueError(f"cannot read {value!r}")
        handled.append(value)

    topic = f"test-handle-{bad_every}"
    follower = TopicFollower("127.0.0.1:1", topic, handle, from_beginning=True)
    values: list[bytes | None] = [str(i).encode() for i in range(1, 13)]
    polls: list[list[bytes | None]] = [values[:6], [None], values[6:]]
    before = errors_of(f"follow-{topic}")
    with caplog.at_level(logging.WARNING, logger="serving.follow"):
        asyncio.run(follower._consume(FakeConsumer(follower, polls)))
    assert handled == [v for v in values if v is not None and int(v) % bad_every]
    bad = sum(1 for v in values if v is not None and int(v) % bad_every == 0)
    assert errors_of(f"follow-{topic}") == before + bad
    # each bad message follows a good one here, so each is a streak of its own
    assert len(caplog.records) == bad and "skipping the message" in caplog.records[0].getMessage()


def test_the_broker_going_away_and_coming_back_is_logged_once_each(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(follow, "LIVENESS_CHECK_S", 0.0)
    up = [True, True, False, False, False, False, False, True, True, False, True]
    checks = itertools.chain(up, itertools.repeat(True))  # up again while stopping

    def listens(bootstrap: str) -> None:
        if not next(checks):
            raise OSError(f"no broker at {bootstrap}: [Errno 111] Connection refused")

    monkeypatch.setattr(follow, "broker_listens", listens)
    follower = TopicFollower("127.0.0.1:1", "test-liveness", print, from_beginning=False)
    before = errors_of("follow-test-liveness")
    with caplog.at_level(logging.INFO, logger="serving.follow"):
        asyncio.run(follower._consume(FakeConsumer(follower, [[]] * len(up))))
    assert errors_of("follow-test-liveness") == before + up.count(False)
    lines = [(r.levelname, r.getMessage().split(":")[1].strip()) for r in caplog.records]
    assert lines == [
        ("WARNING", "OSError"),
        ("INFO", "recovered after 5 failures in 0 s"),
        ("WARNING", "OSError"),
        ("INFO", "recovered after 1 failures in 0 s"),
    ]
