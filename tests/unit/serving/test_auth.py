"""API keys at the HTTP edge: 401 without a valid key, 403 without the route's scope, the
documented error shape, revocation without a restart, the admin token, the off switch, and
no key ever repeated in a log, a metric or a response."""

from __future__ import annotations

import base64
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from pydantic import SecretStr

from recsys.access.keys import KeyStore
from recsys.access.scopes import Scope
from recsys.registry.store import FileRegistry
from serving.app import create_app
from serving.settings import ServingSettings
from tests.keys import bearer, new_key
from training.pipeline import TrainResult

TOKEN = "admin-token-for-these-tests"
RECOMMEND, FEEDBACK, ADMIN = Scope.RECOMMEND, Scope.FEEDBACK, Scope.ADMIN
READ = {RECOMMEND, ADMIN}
LOVE = {"user_id": "u1", "track_id": "tr1", "type": "love"}
ROUTES: list[tuple[str, str, str, dict[str, Any] | None, set[Scope]]] = [
    # method, path template (as in /openapi.json), path called, JSON body, scopes that may call it
    ("POST", "/v1/recommendations", "/v1/recommendations", {"user_id": "u", "k": 3}, {RECOMMEND}),
    ("GET", "/v1/tracks/{track_id}/similar", "/v1/tracks/tr1/similar", None, {RECOMMEND}),
    ("POST", "/v1/feedback", "/v1/feedback", LOVE, {FEEDBACK}),
    ("GET", "/v1/models", "/v1/models", None, READ),
    ("GET", "/v1/models/{version}", "/v1/models/production", None, READ),
    ("GET", "/v1/rollout", "/v1/rollout", None, READ),
    ("GET", "/dashboard", "/dashboard", None, READ),
    ("POST", "/v1/models/{version}/promote", "/v1/models/9.9/promote", None, {ADMIN}),
    ("POST", "/v1/rollback", "/v1/rollback", None, {ADMIN}),
    ("PUT", "/v1/rollout", "/v1/rollout", {"name": "e", "treatment": "9.9", "share": 0.1}, {ADMIN}),
    ("PUT", "/v1/rollout/holdout", "/v1/rollout/holdout", {"share": 0.0}, {ADMIN}),
    ("DELETE", "/v1/rollout/{name}", "/v1/rollout/nothing", None, {ADMIN}),
]  # fmt: skip
OPEN = ["/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json"]


@pytest.fixture
def registry(trained: tuple[FileRegistry, TrainResult], tmp_path: Path) -> FileRegistry:
    shutil.copytree(trained[0].root, tmp_path / "models")
    return FileRegistry(tmp_path / "models")


def app_for(registry: FileRegistry, **overrides: Any) -> TestClient:
    settings = ServingSettings(
        registry=registry.root, feedback_sink="memory://", reload_interval_s=0, **overrides
    )
    return TestClient(create_app(settings))


@pytest.fixture
def client(registry: FileRegistry) -> Iterator[TestClient]:
    with app_for(registry, admin_token=SecretStr(TOKEN)) as c:
        yield c


def call(client: TestClient, method: str, path: str, body: Any, headers: dict[str, str]) -> Response:
    return client.request(method, path, json=body, headers=headers)


def error(response: Response, status: int, code: str) -> str:
    """The message of a documented error body with this status and code."""
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert set(body) == {"error", "message", "request_id"} and body["error"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    return str(body["message"])


def test_the_table_covers_every_guarded_route(client: TestClient) -> None:
    documented = {
        (method.upper(), path)
        for path, methods in client.get("/openapi.json").json()["paths"].items()
        for method, operation in methods.items()
        if "security" in operation
    }
    assert documented == {(method, template) for method, template, *_ in ROUTES}


@pytest.mark.parametrize(
    ("method", "template", "path", "body", "allowed"), ROUTES, ids=[r[1] for r in ROUTES]
)
def test_each_route_needs_one_of_its_scopes(
    client: TestClient,
    registry: FileRegistry,
    method: str,
    template: str,
    path: str,
    body: Any,
    allowed: set[Scope],
) -> None:
    for scope in Scope:
        response = call(client, method, path, body, bearer(new_key(registry.root, scope)))
        if scope in allowed:
            assert response.status_code not in (401, 403), (scope, response.text[:300])
        else:
            message = error(response, 403, "access_denied")
            assert " or ".join(s.value for s in Scope if s in allowed) in message


@pytest.mark.parametrize(
    ("method", "template", "path", "body", "allowed"), ROUTES, ids=[r[1] for r in ROUTES]
)
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer not-a-key", "Basic dXNlcjpwYXNz", "rsk_00000000_key-without-scheme"],
)
def test_no_key_or_an_unknown_one_is_401_with_a_bearer_challenge(
    client: TestClient,
    method: str,
    template: str,
    path: str,
    body: Any,
    allowed: set[Scope],
    authorization: str | None,
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = call(client, method, path, body, headers)
    message = error(response, 401, "unauthenticated")
    assert "Bearer" in message or "unknown or revoked" in message
    challenges = response.headers.get_list("www-authenticate")
    assert 'Bearer realm="recsys"' in challenges
    assert any(c.startswith("Basic") for c in challenges) == (template == "/dashboard")


@pytest.mark.parametrize("path", OPEN)
def test_health_metrics_and_docs_need_no_key(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_a_revoked_key_is_refused_by_the_running_app(client: TestClient, registry: FileRegistry) -> None:
    key = new_key(registry.root, RECOMMEND, name="soon-revoked")
    body = {"user_id": "u", "seed_tracks": ["tr1"], "k": 3}
    assert client.post("/v1/recommendations", json=body, headers=bearer(key)).status_code == 200
    KeyStore(registry.root).revoke("soon-revoked")  # as `recsys keys revoke` in another process
    refused = client.post("/v1/recommendations", json=body, headers=bearer(key))
    assert error(refused, 401, "unauthenticated") == "unknown or revoked API key"
    later = new_key(registry.root, RECOMMEND)  # and a key created now works at once
    assert client.post("/v1/recommendations", json=body, headers=bearer(later)).status_code == 200


def test_the_admin_token_is_an_admin_key(client: TestClient) -> None:
    admin = bearer(TOKEN)
    assert error(client.post("/v1/rollback", headers=admin), 409, "nothing_to_roll_back")
    assert client.get("/v1/models", headers=admin).status_code == 200
    assert client.put("/v1/rollout/holdout", json={"share": 0.01}, headers=admin).status_code == 200
    error(client.post("/v1/feedback", json=LOVE, headers=admin), 403, "access_denied")
    error(client.post("/v1/rollback", headers=bearer(TOKEN + "x")), 401, "unauthenticated")


def test_a_browser_opens_the_dashboard_with_the_key_as_a_basic_password(
    client: TestClient, registry: FileRegistry
) -> None:
    key = new_key(registry.root, RECOMMEND)

    def login(user_password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(user_password.encode()).decode()}

    page = client.get("/dashboard", headers=login(f"anyone:{key}"))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for wrong in (f"anyone:{key}x", key, "anyone:", "\u00e9:\u00e9"):
        error(client.get("/dashboard", headers=login(wrong)), 401, "unauthenticated")
    error(client.get("/dashboard", headers={"Authorization": "Basic !!!"}), 401, "unauthenticated")
    # elsewhere a Basic login is no key at all
    error(client.get("/v1/models", headers=login(f"anyone:{key}")), 401, "unauthenticated")


def test_keys_off_opens_every_route_and_says_so_once_at_start(
    registry: FileRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), app_for(registry, auth_required=False) as c:
        statuses = {path: call(c, method, path, body, {}).status_code for method, _, path, body, _ in ROUTES}
        statuses["/v1/models"] = c.get("/v1/models", headers={"Authorization": "Bearer junk"}).status_code
    assert not {path: s for path, s in statuses.items() if s in (401, 403)}, statuses
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if "authentication is off" in w] == [
        "authentication is off (RECSYS_AUTH_REQUIRED=false): every route is open to every caller"
    ]


def test_with_no_key_anywhere_the_start_says_how_to_create_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), app_for(FileRegistry(tmp_path / "empty")):
        pass
    assert "recsys keys create" in caplog.text


def test_a_key_never_appears_in_logs_metrics_or_responses(
    registry: FileRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A key used for every kind of answer (200, 202, 401, 403, 404, 422, 429), then revoked and
    used again: neither it nor a near miss of it is in anything the service logs or answers."""
    key = new_key(registry.root, RECOMMEND, FEEDBACK, name="watched")
    near_miss = key[:-3] + ("abc" if not key.endswith("abc") else "abd")
    texts: list[str] = []
    statuses: list[int] = []
    with caplog.at_level(logging.DEBUG), app_for(registry, feedback_rate_per_user="3/hour") as c:
        calls = [
            ("POST", "/v1/recommendations", {"user_id": "u", "seed_tracks": ["tr1"]}, key),
            ("GET", "/v1/tracks/nope/similar", None, key),
            ("POST", "/v1/feedback", {"events": [LOVE, LOVE, LOVE]}, key),
            ("POST", "/v1/feedback", LOVE, key),  # over the listener's limit
            ("POST", "/v1/feedback", {"user_id": "u", "type": "love"}, key),
            ("POST", "/v1/rollback", None, key),
            ("POST", "/v1/recommendations", {"user_id": "u"}, near_miss),
        ]
        for method, path, body, presented in calls:
            response = call(c, method, path, body, bearer(presented))
            statuses.append(response.status_code)
            texts += [response.text, str(response.headers)]
        KeyStore(registry.root).revoke("watched")
        response = c.get("/v1/models", headers=bearer(key))
        statuses.append(response.status_code)
        texts += [response.text, str(response.headers), c.get("/metrics").text]
        impressions = c.app.state.impressions.items  # type: ignore[attr-defined]
    assert statuses == [200, 404, 202, 429, 422, 403, 401, 401]
    assert impressions and 'recsys_requests_limited_total{limit="user"} ' in texts[-1]
    texts += [caplog.text, *(r.getMessage() for r in caplog.records), repr(impressions)]
    for secret in (key, near_miss, key.split("_", 2)[2]):
        assert not [text[:200] for text in texts if secret in text]
