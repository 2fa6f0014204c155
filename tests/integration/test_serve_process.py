"""``recsys serve`` as a real uvicorn process on 127.0.0.1, called over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from recsys.registry import FileRegistry
from streams.broker import free_port
from training.pipeline import TrainResult

START_TIMEOUT_S = 60


@pytest.fixture
def server(trained: tuple[FileRegistry, TrainResult]) -> Iterator[str]:
    yield from serve(trained[0])


def serve(registry: FileRegistry, **settings: str) -> Iterator[str]:
    """``recsys serve`` on a free port until the generator is closed; ``settings`` are RECSYS_*."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")} | {
        f"RECSYS_{k.upper()}": v for k, v in settings.items()
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys", "serve", "--registry", str(registry.root), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(
                    f"server exited: {process.stdout.read().decode() if process.stdout else ''}"
                )
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        else:
            raise AssertionError("server not ready in time")
        yield base
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_served_over_http(server: str) -> None:
    request = urllib.request.Request(
        f"{server}/v1/recommendations",
        data=json.dumps({"user_id": "u1", "seed_tracks": ["tr1", "tr2"], "k": 7}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
        assert response.headers["x-request-id"] == body["request_id"]
    assert body["model_version"] == "2.1" and len(body["items"]) == 7
    with urllib.request.urlopen(f"{server}/openapi.json", timeout=10) as response:
        assert "/v1/recommendations" in json.loads(response.read())["paths"]
