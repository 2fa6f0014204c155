"""Schemathesis's command line against a live ``recsys serve``: every operation, admin ones
included, answers no 5xx and only responses its OpenAPI document describes. It presents an
API key with every scope."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from recsys.registry.store import FileRegistry
from tests.integration.test_serve_process import ServeProcess
from training.pipeline import TrainResult

SEED = 20240607
EXAMPLES_PER_OPERATION = 100
CHECKS = "not_a_server_error,response_schema_conformance"
RUN_TIMEOUT_S = 240
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_every_operation_answers_as_documented(
    trained: tuple[FileRegistry, TrainResult], tmp_path: Path
) -> None:
    shutil.copytree(trained[0].root, tmp_path / "models")  # the admin calls change the registry
    server = ServeProcess(FileRegistry(tmp_path / "models"), feedback_sink="memory://", reload_interval_s="0")
    base = server.start()
    try:
        report = tmp_path / "junit.xml"
        run = _schemathesis(base, report, server.auth["Authorization"], workdir=tmp_path)
        operations = _operations(base)
        plan = _get(f"{base}/v1/rollout", server.auth)
    finally:
        server.stop()
    tail = (run.stdout + run.stderr)[-6000:]
    assert run.returncode == 0, f"schemathesis found failures:\n{tail}"
    tested = {case.get("name") for case in ET.parse(report).getroot().iter("testcase")}
    assert tested == operations, tail
    assert plan["revision"] > 0, "no admin call was authorised: the rollout plan never changed"


def _schemathesis(
    base: str, report: Path, authorization: str, *, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """The command line, run in ``workdir`` (it keeps a cache folder where it runs)."""
    return subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{base}/openapi.json",
            f"--checks={CHECKS}",
            f"--seed={SEED}",
            f"--max-examples={EXAMPLES_PER_OPERATION}",
            "--phases=examples,coverage,fuzzing",
            f"--header=Authorization: {authorization}",
            "--workers=1",
            "--generation-database=none",
            "--request-timeout=10",
            "--suppress-health-check=all",
            "--no-color",
            "--report=junit",
            f"--report-junit-path={report}",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def _operations(base: str) -> set[str]:
    paths = _get(f"{base}/openapi.json")["paths"]
    return {f"{method.upper()} {path}" for path, methods in paths.items() for method in methods}


def _get(url: str, headers: dict[str, str] | None = None) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
        return json.loads(response.read())
