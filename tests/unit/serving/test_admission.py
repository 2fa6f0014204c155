"""Bounded admission: a full replica refuses at once, health and metrics stay answerable."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from serving.admission import Admission


class _Slow:
    """An app whose requests stay in progress until released (or fail when told to)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.started += 1
        if scope["path"] not in ("/healthz", "/metrics"):
            await self.release.wait()
        if scope["path"] == "/fails":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def request(app: Admission, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "state": {"request_id": "r1"}}
    try:
        await app(scope, receive, send)
    except RuntimeError:
        return 500, {}, b""
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


@pytest.mark.parametrize("seed", range(5))
def test_beyond_the_limit_requests_are_refused_at_once_with_the_error_shape(seed: int) -> None:
    rng = random.Random(seed)
    limit, offered = rng.randrange(1, 40), rng.randrange(41, 120)

    async def scenario() -> tuple[list[int], list[Any], int]:
        inner = _Slow()
        app = Admission(inner, limit=limit, retry_after_s=3)
        waiting = [asyncio.create_task(request(app, "/v1/recommendations")) for _ in range(offered)]
        await asyncio.sleep(0.01)
        finished = [task for task in waiting if task.done()]  # refused without waiting
        done = [task.result() for task in finished]
        health = await request(app, "/healthz")
        metrics = await request(app, "/metrics")
        inner.release.set()
        admitted = [await task for task in waiting if task not in finished]
        statuses = [status for status, _, _ in admitted]
        return [status for status, _, _ in done] + [health[0], metrics[0]] + statuses, done, app.in_progress

    statuses, refused, in_progress = asyncio.run(scenario())
    assert statuses.count(503) == offered - limit == len(refused)
    assert statuses.count(200) == limit + 2  # the admitted ones, health and metrics
    _, headers, body = refused[0]
    assert headers[b"retry-after"] == b"3"
    assert json.loads(body) == {
        "error": "overloaded",
        "message": f"over {limit} requests in progress; retry in 3 s",
        "request_id": "r1",
    }
    assert in_progress == 0


def test_a_request_that_fails_leaves_its_place() -> None:
    async def scenario() -> int:
        inner = _Slow()
        inner.release.set()
        app = Admission(inner, limit=1, retry_after_s=1)
        assert (await request(app, "/fails"))[0] == 500
        return (await request(app, "/v1/recommendations"))[0]

    assert asyncio.run(scenario()) == 200


def test_no_limit_admits_everything() -> None:
    async def scenario() -> list[int]:
        inner = _Slow()
        app = Admission(inner, limit=0, retry_after_s=1)
        waiting = [asyncio.create_task(request(app, "/v1/feedback")) for _ in range(50)]
        await asyncio.sleep(0.01)
        inner.release.set()
        return [(await task)[0] for task in waiting]

    assert asyncio.run(scenario()) == [200] * 50
