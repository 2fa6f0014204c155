"""The error contract: every error is ``{"error", "message", "request_id"}``, a 422 names the
field and never repeats the input, and no request, however hostile, gets a 5xx."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from recsys.registry.store import FileRegistry
from serving.app import create_app
from serving.schemas import ErrorBody
from serving.settings import ServingSettings
from tests.keys import authorised
from training.pipeline import TrainResult

JSON = {"content-type": "application/json"}
INTERNAL_NAMES = ("function-after", "FeedbackBatch", "FeedbackEvent", "_listening_needs_a_duration", "detail")
BODY_ROUTES = [
    ("POST", "/v1/recommendations"),
    ("POST", "/v1/feedback"),
    ("PUT", "/v1/rollout"),
    ("PUT", "/v1/rollout/holdout"),
]


@pytest.fixture
def client(trained: tuple[FileRegistry, TrainResult], tmp_path: Path) -> Iterator[TestClient]:
    """The API on a private copy of the trained registry, called with a key of every scope; server
    errors come back as responses."""
    shutil.copytree(trained[0].root, tmp_path / "models")
    settings = ServingSettings(
        registry=tmp_path / "models",
        feedback_sink="memory://",
        reload_interval_s=0,
        max_body_bytes=1_000_000,  # room for a batch over the events limit
    )
    headers = authorised(tmp_path / "models")
    with TestClient(create_app(settings), raise_server_exceptions=False, headers=headers) as c:
        yield c


def error_of(response: Response, status: int) -> ErrorBody:
    """The body, checked to be the documented error shape with this call's request id."""
    assert response.status_code == status, response.text[:500]
    body = ErrorBody.model_validate(response.json(), strict=True)
    assert set(response.json()) == {"error", "message", "request_id"}
    assert body.request_id == response.headers["x-request-id"]
    assert "\n" not in body.message and len(body.message) <= 300
    return body


def event(i: int = 0, **fields: object) -> dict[str, object]:
    return {"user_id": f"listener-{i}", "track_id": f"tr{i}", "type": "play", "listen_ms": 1000} | fields


def test_unknown_route_is_404(client: TestClient) -> None:
    assert error_of(client.get("/v2/nothing-here"), 404).error == "not_found"
    assert error_of(client.post("/v1/recommendations/extra", json={}), 404).error == "not_found"


def test_wrong_method_is_405_and_says_what_is_allowed(client: TestClient) -> None:
    response = client.delete("/v1/recommendations")
    body = error_of(response, 405)
    assert body.error == "method_not_allowed" and "POST" in body.message
    assert response.headers["allow"] == "POST"
    assert error_of(client.get("/v1/feedback"), 405).error == "method_not_allowed"


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize(
    "send",
    [
        {"data": {"user_id": "u", "share": "0.1"}},  # an HTML form
        {"content": b'{"user_id": "u"}', "headers": {"content-type": "text/plain"}},
        {"content": b"user_id=u", "headers": {"content-type": "application/x-www-form-urlencoded"}},
        {"files": {"f": ("body.json", b"{}", "application/json")}},  # multipart
        {"content": b'{"user_id": "u"}'},  # no content type at all
    ],
    ids=["form", "text", "urlencoded", "multipart", "no-content-type"],
)
def test_bodies_that_are_not_json_are_415(
    client: TestClient, method: str, path: str, send: dict[str, Any]
) -> None:
    content = {key: value for key, value in send.items() if key != "headers"}
    headers = send.get("headers", {})
    body = error_of(client.request(method, path, headers=headers, **content), 415)
    assert body.error == "unsupported_media_type" and "application/json" in body.message


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/merge-patch+json"])
def test_json_media_types_with_parameters_or_suffixes_are_accepted(
    client: TestClient, content_type: str
) -> None:
    response = client.post(
        "/v1/recommendations", content=b'{"user_id": "u", "k": 3}', headers={"content-type": content_type}
    )
    assert response.status_code == 200 and len(response.json()["items"]) == 3


def test_an_empty_body_says_the_body_is_missing(client: TestClient) -> None:
    for headers in ({}, JSON):
        body = error_of(client.post("/v1/recommendations", content=b"", headers=headers), 422)
        assert body.message == "body: field required"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"user_id": "u"}, "track_id: field required (and 1 more)"),
        ({"track_id": "t", "type": "love"}, "user_id: field required"),
        (event(listen_ms=None), "listen_ms is required for play events"),
        (event(type="love"), "listen_ms only applies to play, skip and complete, not love"),
        (event(listen_ms=-5), "listen_ms: input should be greater than or equal to 0"),
        (event(surprise="value-sent"), "surprise: extra inputs are not permitted"),
        ([event()], "body: input should be a JSON object"),
    ],
)
def test_a_bad_single_event_names_the_field(client: TestClient, payload: object, message: str) -> None:
    response = client.post("/v1/feedback", json=payload)
    body = error_of(response, 422)
    assert body.error == "invalid_request" and message in body.message
    assert not any(name in response.text for name in INTERNAL_NAMES), response.text
    assert "listener-0" not in response.text and "value-sent" not in response.text


def test_a_bad_event_in_a_batch_is_named_by_its_position(client: TestClient) -> None:
    events = [event(i) for i in range(6)]
    events[3]["listen_ms"] = -1
    response = client.post("/v1/feedback", json={"events": events})
    body = error_of(response, 422)
    assert body.message == "events.3.listen_ms: input should be greater than or equal to 0"
    assert "listener-" not in response.text
    assert not any(name in response.text for name in INTERNAL_NAMES), response.text
    missing = error_of(client.post("/v1/feedback", json={"events": [event(), {"user_id": "u"}]}), 422)
    assert missing.message.startswith("events.1.track_id: field required")


@pytest.mark.parametrize("bad_event", [False, True], ids=["valid-events", "one-invalid"])
def test_an_oversized_batch_is_a_short_422(client: TestClient, bad_event: bool) -> None:
    events = [event(i) for i in range(1001)]
    if bad_event:
        events[500]["type"] = "nonsense"
    response = client.post("/v1/feedback", json={"events": events})
    body = error_of(response, 422)
    assert body.message.startswith("events")
    assert len(response.content) < 400 and "listener-" not in response.text
    assert not any(name in response.text for name in INTERNAL_NAMES), response.text


def test_query_and_path_errors_name_the_parameter(client: TestClient) -> None:
    k = error_of(client.get("/v1/tracks/tr1/similar", params={"k": 0}), 422)
    assert k.message == "k: input should be greater than or equal to 1"
    force = error_of(client.post("/v1/models/2.1/promote", params={"force": "maybe"}), 422)
    assert force.message.startswith("force: input should be a valid boolean")


def test_a_service_error_keeps_its_code(client: TestClient) -> None:
    assert error_of(client.get("/v1/tracks/not-a-track/similar"), 404).error == "unknown_track"
    assert error_of(client.post("/v1/rollback"), 409).error == "nothing_to_roll_back"
    refused = client.post("/v1/rollback", headers={"Authorization": "Bearer not-a-key"})
    assert error_of(refused, 401).error == "unauthenticated"


DEEP = 10_000
HOSTILE = {
    "lone-surrogate-value": b'{"user_id": "\\ud800", "track_id": "t", "type": "love", "share": 0.1}',
    "lone-low-surrogate": b'{"user_id": "a\\udfffb", "track_id": "t", "type": "love"}',
    "lone-surrogate-key": b'{"\\ud800": 1, "user_id": "u"}',
    "lone-surrogate-in-list": b'{"user_id": "u", "seed_tracks": ["\\udbff"], "events": ["\\ud800"]}',
    "surrogate-pair-is-fine": b'{"user_id": "\\ud83c\\udfb5", "track_id": "t", "type": "love"}',
    "nul-value": b'{"user_id": "a\\u0000b", "track_id": "\\u0000", "type": "love", "name": "\\u0000"}',
    "nul-key": b'{"\\u0000": 1}',
    "raw-nul-byte": b'{"user_id": "a\x00b"}',
    "nested-arrays": b"[" * DEEP + b"]" * DEEP,
    "nested-objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "nested-in-a-field": b'{"user_id": "u", "seed_tracks": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    "float-overflow": b'{"user_id": "u", "k": 1e400, "share": 1e400, "listen_ms": 1e400}',
    "negative-overflow": b'{"user_id": "u", "k": -1e400, "share": -1e400}',
    "huge-integer": b'{"user_id": "u", "k": 1' + b"0" * 400 + b', "share": 1' + b"0" * 400 + b"}",
    "longer-integer": b'{"user_id": "u", "k": 1' + b"0" * 5000 + b"}",
    "nan-literal": b'{"user_id": "u", "k": NaN, "share": Infinity}',
    "invalid-utf8": b'{"user_id": "\xff\xfe\xc3\x28"}',
    "overlong-utf8": b'{"user_id": "\xc0\xaf"}',
    "encoded-surrogate": b'{"user_id": "\xed\xa0\x80"}',
    "utf8-bom": b'\xef\xbb\xbf{"user_id": "u"}',
    "empty": b"",
    "whitespace": b"   ",
    "null": b"null",
    "string": b'"user_id"',
    "truncated": b'{"user_id": "u',
    "trailing-garbage": b'{"user_id": "u"} x',
    "long-unknown-key": b'{"' + b"k" * 50_000 + b'": 1}',
    "newline-key": b'{"user_id": "u", "a\\nb": 1}',
    "array": b"[1, 2]",
}


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("name", list(HOSTILE))
def test_no_body_gets_a_server_error(client: TestClient, method: str, path: str, name: str) -> None:
    response = client.request(method, path, content=HOSTILE[name], headers=JSON)
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        error_of(response, response.status_code)
    assert len(response.content) < 2000 or response.status_code < 400


@pytest.mark.parametrize(
    "name",
    [
        "lone-surrogate-value",
        "lone-surrogate-key",
        "nested-arrays",
        "invalid-utf8",
        "longer-integer",
        "nan-literal",
    ],
)
def test_malformed_json_is_a_422_that_says_so(client: TestClient, name: str) -> None:
    body = error_of(client.post("/v1/feedback", content=HOSTILE[name], headers=JSON), 422)
    assert body.message.startswith("body: invalid JSON")


def test_numbers_too_large_are_out_of_range(client: TestClient) -> None:
    huge = error_of(client.post("/v1/recommendations", content=HOSTILE["huge-integer"], headers=JSON), 422)
    assert huge.message.startswith("k: input should be less than or equal to 500")
    infinite = error_of(
        client.post("/v1/recommendations", content=HOSTILE["float-overflow"], headers=JSON), 422
    )
    assert infinite.message.startswith("k: ")
    holdout = client.put("/v1/rollout/holdout", content=b'{"share": 1e400}', headers=JSON)
    assert error_of(holdout, 422).message.startswith("share: ")


def test_control_characters_in_a_field_name_stay_on_one_line(client: TestClient) -> None:
    response = client.post("/v1/recommendations", content=HOSTILE["newline-key"], headers=JSON)
    assert error_of(response, 422).message == "a\\nb: extra inputs are not permitted"
    long_key = error_of(
        client.post("/v1/recommendations", content=HOSTILE["long-unknown-key"], headers=JSON), 422
    )
    assert len(long_key.message) < 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tracks/%ED%A0%80/similar"),
        ("GET", "/v1/tracks/%00/similar"),
        ("GET", "/v1/models/%FF%FE"),
        ("POST", "/v1/models/%00/promote"),
        ("DELETE", "/v1/rollout/%ED%A0%80"),
        ("GET", "/v1/tracks/tr1/similar?k=%ED%A0%80"),
        ("GET", "/v1/tracks/tr1/similar?k=1e400"),
        ("GET", "/v1/tracks/tr1/similar?k=1" + "0" * 400),
    ],
)
def test_no_path_or_query_gets_a_server_error(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert 400 <= response.status_code < 500, response.text[:500]
    error_of(response, response.status_code)


def test_a_json_body_is_still_read_as_before(client: TestClient) -> None:
    accepted = client.post("/v1/feedback", json={"events": [event(i) for i in range(3)]})
    assert accepted.status_code == 202 and accepted.json()["accepted"] == 3
    single = client.post("/v1/feedback", content=json.dumps(event(ts="2024-06-01T00:00:00Z")), headers=JSON)
    assert single.status_code == 202 and single.json()["accepted"] == 1
