"""Schema-driven fuzzing of the whole API: no generated request may cause a 500."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr

from recsys.registry.store import FileRegistry
from serving.app import create_app
from serving.settings import ServingSettings
from tests.keys import authorised
from training.pipeline import TrainResult

EXAMPLES_PER_OPERATION = 30


def test_no_generated_request_causes_a_server_error(
    trained: tuple[FileRegistry, TrainResult], tmp_path: Path
) -> None:
    shutil.copytree(trained[0].root, tmp_path / "models")
    settings_ = ServingSettings(
        registry=tmp_path / "models",
        admin_token=SecretStr("t"),
        reload_interval_s=0,
        feedback_sink="memory://",
    )
    app = create_app(settings_)
    statuses: list[int] = []
    headers = authorised(tmp_path / "models")  # every scope: the routes' own checks are fuzzed
    with TestClient(app):  # runs the lifespan: the model is loaded, as in production
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 8
        for operation in operations:
            _fuzz(operation, statuses, headers)
    assert 200 in statuses and len(statuses) > 5 * len(operations)


def _fuzz(operation: Any, statuses: list[int], headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        response = case.call(headers=headers)
        statuses.append(response.status_code)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])

    check()
