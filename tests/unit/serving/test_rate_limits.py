"""Feedback rate limits over HTTP: 429 with Retry-After in the documented shape, events counted
per API key (across listeners) and per listener (across keys), a metric per limit.

Windows are an hour long: no test depends on how fast this machine runs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from recsys.access.scopes import Scope
from serving.app import create_app
from serving.settings import ServingSettings
from tests.keys import bearer, new_key

LOOSE = "1000000/hour"


def event(user: str) -> dict[str, Any]:
    return {"user_id": user, "track_id": "tr1", "type": "play", "listen_ms": 1000}


class Api:
    """The API (no model needed for feedback) with a way to make keys."""

    def __init__(self, root: Path, client: TestClient) -> None:
        self.root, self.client = root, client
        self.limited_before = self._limited()

    def key(self) -> dict[str, str]:
        return bearer(new_key(self.root, Scope.FEEDBACK))

    def post(self, key: dict[str, str], users: list[str]) -> Response:
        return self.client.post("/v1/feedback", json={"events": [event(u) for u in users]}, headers=key)

    def limited(self) -> dict[str, float]:
        """``recsys_requests_limited_total`` by limit since this API started (a per-process metric)."""
        return {limit: n - self.limited_before.get(limit, 0.0) for limit, n in self._limited().items()}

    def _limited(self) -> dict[str, float]:
        text = self.client.get("/metrics").text
        return {
            m[1]: float(m[2])
            for m in re.finditer(r'recsys_requests_limited_total\{limit="(\w+)"\} (\S+)', text)
        }


@pytest.fixture
def api_with(tmp_path: Path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def start(*, per_key: str = LOOSE, per_user: str = LOOSE) -> Api:
        settings = ServingSettings(
            registry=tmp_path,
            feedback_sink="memory://",
            feedback_rate_per_key=per_key,
            feedback_rate_per_user=per_user,
            max_body_bytes=1_000_000,  # room for a full batch
        )
        client = TestClient(create_app(settings))
        clients.append(client.__enter__())
        return Api(tmp_path, client)

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def refused(response: Response, limit: str) -> int:
    """The Retry-After of a 429 in the documented shape."""
    assert response.status_code == 429, response.text[:300]
    body = response.json()
    assert set(body) == {"error", "message", "request_id"} and body["error"] == "rate_limited"
    assert body["request_id"] == response.headers["x-request-id"]
    assert ("per API key" if limit == "key" else "per listener") in body["message"]
    retry = response.headers["retry-after"]
    assert retry.isdigit() and f"retry in {retry} s" in body["message"]
    return int(retry)


@pytest.mark.parametrize(("limit", "batch"), [(1, 1), (5, 1), (5, 2), (12, 5), (100, 30), (1000, 1000)])
def test_a_key_posts_its_limit_in_events_then_429(api_with: Any, limit: int, batch: int) -> None:
    api = api_with(per_key=f"{limit}/hour")
    key, users = api.key(), iter(f"listener-{i}" for i in range(10**6))
    accepted = 0
    while (response := api.post(key, [next(users) for _ in range(batch)])).status_code == 202:
        accepted += batch
    assert limit - batch < accepted <= limit  # a batch of N counts N, across listeners
    assert 3000 < refused(response, "key") <= 3600
    assert api.post(api.key(), ["listener-0"]).status_code == 202  # another key: its own count
    assert api.limited() == {"key": 1.0, "user": 0.0}


@pytest.mark.parametrize(("limit", "keys"), [(1, 1), (4, 2), (10, 3)])
def test_a_listener_gets_its_limit_across_keys_and_alone(api_with: Any, limit: int, keys: int) -> None:
    api = api_with(per_user=f"{limit}/hour")
    clients = [api.key() for _ in range(keys)]
    for i in range(limit):
        assert api.post(clients[i % keys], ["busy", f"quiet-{i}"]).status_code == 202
    response = api.post(clients[-1], ["busy", "newcomer"])
    assert 3000 < refused(response, "user") <= 3600
    assert api.post(clients[0], ["newcomer"] * limit).status_code == 202  # the refusal counted nothing
    assert api.post(clients[0], ["someone-else"]).status_code == 202
    assert api.limited() == {"key": 0.0, "user": 1.0}


def test_a_batch_larger_than_a_limit_admits_is_a_422_that_says_to_split_it(api_with: Any) -> None:
    api = api_with(per_key="10/hour", per_user="3/hour")
    key = api.key()
    whole = api.post(key, [f"u{i}" for i in range(11)])
    one_listener = api.post(key, ["u"] * 4)
    for response in (whole, one_listener):
        assert response.status_code == 422 and "send smaller batches" in response.json()["message"]
    assert api.post(key, [f"u{i}" for i in range(10)]).status_code == 202


def test_with_keys_off_every_caller_shares_one_count(tmp_path: Path) -> None:
    settings = ServingSettings(
        registry=tmp_path, feedback_sink="memory://", auth_required=False, feedback_rate_per_key="3/hour"
    )
    with TestClient(create_app(settings)) as client:
        posts = [client.post("/v1/feedback", json=event(f"u{i}")) for i in range(4)]
    assert [p.status_code for p in posts] == [202, 202, 202, 429]


@pytest.mark.parametrize("setting", ["feedback_rate_per_key", "feedback_rate_per_user"])
def test_a_malformed_limit_is_refused_at_start(setting: str) -> None:
    with pytest.raises(ValueError, match="not a rate limit"):
        ServingSettings(**{setting: "lots"})  # type: ignore[arg-type]
