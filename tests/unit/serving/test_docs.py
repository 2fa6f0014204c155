"""The API's documentation: /docs and /redoc work offline, and the OpenAPI document describes
every error response with the one error shape."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from serving import routes
from serving.app import create_app
from serving.bodies import JsonRoute
from serving.settings import ServingSettings

ASSET = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")
OPEN_PATHS = ("/healthz", "/readyz")
"""Documented routes that need no API key (/metrics and the docs are not in the document)."""
ERROR_BODY = "#/components/schemas/ErrorBody"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app without a model: the documentation does not need one."""
    registry = tmp_path_factory.mktemp("empty") / "models"
    with TestClient(create_app(ServingSettings(registry=registry, feedback_sink="memory://"))) as c:
        yield c


@pytest.fixture(scope="module")
def openapi(client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def operations(openapi: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in openapi["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


@pytest.mark.parametrize(
    ("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone")]
)
def test_doc_pages_load_only_local_assets(client: TestClient, page: str, script: str) -> None:
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    urls = [first or second for first, second in ASSET.findall(response.text)]
    assert any(script in url for url in urls) and "/openapi.json" in urls
    assert not re.search(r"https?://|//[a-z]", response.text.replace("window.location.origin", ""))
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url


def test_asset_scripts_are_served_with_their_types(client: TestClient) -> None:
    page = client.get("/docs").text
    [css] = [u for u in re.findall(r'href="([^"]+)"', page) if u.endswith(".css")]
    assert client.get(css).headers["content-type"].startswith("text/css")
    [js] = [u for u in re.findall(r'src="([^"]+)"', page) if u.endswith(".js")]
    assert "javascript" in client.get(js).headers["content-type"]


def test_every_error_response_is_documented_with_the_error_shape(openapi: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in openapi["components"]["schemas"]
    error_body = openapi["components"]["schemas"]["ErrorBody"]
    assert set(error_body["required"]) == {"error", "message", "request_id"}
    for method, path, operation in operations(openapi):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": ERROR_BODY}, (method, path, status)
                assert response["description"], (method, path, status)


def test_each_route_documents_the_errors_it_can_answer(openapi: dict[str, Any]) -> None:
    for method, path, operation in operations(openapi):
        documented = {int(status) for status in operation["responses"] if int(status) >= 400}
        has_parameters = bool(operation.get("parameters")) or "requestBody" in operation
        if "requestBody" in operation:
            assert {413, 415, 422} <= documented, (method, path)
        if has_parameters:
            assert 422 in documented, (method, path)
        if path not in OPEN_PATHS:
            assert {401, 403} <= documented, (method, path)
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"], (method, path)
        if path.startswith("/v1/"):  # a full replica refuses any of them at once
            assert 503 in documented, (method, path)
            assert "Retry-After" in operation["responses"]["503"]["headers"], (method, path)
    responses = {(m, p): {int(s) for s in o["responses"]} for m, p, o in operations(openapi)}
    assert {404, 503} <= responses[("GET", "/v1/tracks/{track_id}/similar")]
    assert 503 in responses[("POST", "/v1/recommendations")] and 503 in responses[("POST", "/v1/feedback")]
    assert {404, 409} <= responses[("POST", "/v1/models/{version}/promote")]


def test_every_route_but_health_declares_the_api_key_scheme(openapi: dict[str, Any]) -> None:
    schemes = openapi["components"]["securitySchemes"]
    assert schemes["apiKey"] == schemes["apiKey"] | {"type": "http", "scheme": "bearer"}
    assert schemes["dashboardLogin"] == schemes["dashboardLogin"] | {"type": "http", "scheme": "basic"}
    for method, path, operation in operations(openapi):
        if path in OPEN_PATHS:
            assert "security" not in operation, (method, path)
        elif path == "/dashboard":  # a browser may log in with the key as a Basic password
            assert operation["security"] == [{"apiKey": []}, {"dashboardLogin": []}]
        else:
            assert operation["security"] == [{"apiKey": []}], (method, path)


@pytest.mark.parametrize(
    ("method", "path", "scopes"),
    [
        ("POST", "/v1/recommendations", "`recommend`"),
        ("POST", "/v1/feedback", "`feedback`"),
        ("GET", "/v1/models", "`recommend` or `admin`"),
        ("GET", "/dashboard", "`recommend` or `admin`"),
        ("PUT", "/v1/rollout", "`admin`"),
        ("POST", "/v1/rollback", "`admin`"),
    ],
)
def test_each_route_says_which_scopes_it_needs(
    openapi: dict[str, Any], method: str, path: str, scopes: str
) -> None:
    forbidden = openapi["paths"][path][method.lower()]["responses"]["403"]["description"]
    assert forbidden.endswith(f"needs: {scopes}."), forbidden


def test_rate_limits_are_documented_on_feedback_alone(openapi: dict[str, Any]) -> None:
    limited = {(method, path) for method, path, op in operations(openapi) if "429" in op["responses"]}
    assert limited == {("POST", "/v1/feedback")}
    headers = openapi["paths"]["/v1/feedback"]["post"]["responses"]["429"]["headers"]
    assert headers["Retry-After"]["schema"] == {"type": "integer"}


def test_every_route_that_takes_a_body_refuses_what_is_not_json() -> None:
    modules = [
        importlib.import_module(f"serving.routes.{m.name}") for m in pkgutil.iter_modules(routes.__path__)
    ]
    found = [route for module in modules for route in module.router.routes]
    takes_body = [route for route in found if isinstance(route, APIRoute) and route.body_field]
    assert len(takes_body) >= 4
    assert all(isinstance(route, JsonRoute) for route in takes_body), [r.path for r in takes_body]


def test_the_feedback_body_is_one_event_or_a_batch(openapi: dict[str, Any]) -> None:
    body = openapi["paths"]["/v1/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    refs = {option["$ref"].rsplit("/", 1)[1] for option in body["anyOf"]}
    assert refs == {"FeedbackEvent", "FeedbackBatch"}


def test_no_docs_page_needs_a_model(tmp_path: Path) -> None:
    with TestClient(create_app(ServingSettings(registry=tmp_path, feedback_sink="memory://"))) as c:
        assert c.get("/readyz").status_code == 503
        assert c.get("/docs").status_code == 200 and c.get("/redoc").status_code == 200
