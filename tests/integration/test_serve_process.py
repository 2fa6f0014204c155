"""``recsys serve`` as a real uvicorn process on 127.0.0.1, called over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest

from deploy.kafka_launcher import free_port
from recsys.access.scopes import Scope
from recsys.registry.store import FileRegistry
from tests.keys import authorised, bearer
from training.pipeline import TrainResult

START_TIMEOUT_S = 60


@pytest.fixture
def server(trained: tuple[FileRegistry, TrainResult]) -> Iterator[str]:
    yield from serve(trained[0])


class ServeProcess:
    """``recsys serve`` on a free port of 127.0.0.1; ``settings`` are RECSYS_*. ``auth`` is the
    header of a key with every scope, created in its registry."""

    def __init__(self, registry: FileRegistry, **settings: str) -> None:
        self.registry = registry
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")} | {
            f"RECSYS_{k.upper()}": v for k, v in settings.items()
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.base = ""
        self.auth = authorised(registry.root)

    def start(self) -> str:
        """Start it and wait until it is ready; returns its base URL."""
        port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "recsys",
                "serve",
                "--registry",
                str(self.registry.root),
                "--port",
                str(port),
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                raise AssertionError(f"server exited: {output}")
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return self.base
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise AssertionError("server not ready in time")

    def kill(self) -> None:
        """SIGKILL it, answering nothing more."""
        if self.process is not None:
            self.process.kill()
            self.process.communicate(timeout=20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.communicate(timeout=20)


def serve(registry: FileRegistry, **settings: str) -> Iterator[str]:
    """``recsys serve`` on a free port until the generator is closed; ``settings`` are RECSYS_*."""
    process = ServeProcess(registry, **settings)
    try:
        yield process.start()
    finally:
        process.stop()


def recommend(server: str, headers: dict[str, str]) -> tuple[int, dict[str, Any], Message]:
    """``POST /v1/recommendations``: status, body and headers, errors included."""
    request = urllib.request.Request(
        f"{server}/v1/recommendations",
        data=json.dumps({"user_id": "u1", "seed_tracks": ["tr1", "tr2"], "k": 7}).encode(),
        headers={"Content-Type": "application/json"} | headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def test_served_over_http(server: str, trained: tuple[FileRegistry, TrainResult]) -> None:
    status, body, headers = recommend(server, authorised(trained[0].root, Scope.RECOMMEND))
    assert status == 200 and headers["x-request-id"] == body["request_id"]
    assert body["model_version"] == "2.1" and len(body["items"]) == 7
    with urllib.request.urlopen(f"{server}/openapi.json", timeout=10) as response:
        assert "/v1/recommendations" in json.loads(response.read())["paths"]


def test_a_key_is_needed_and_revoked_at_once(trained: tuple[FileRegistry, TrainResult]) -> None:
    """Keys created and revoked by ``recsys keys`` apply to the running server without a restart."""
    registry = trained[0]
    process = ServeProcess(registry, feedback_sink="memory://")
    server = process.start()
    try:
        missing = recommend(server, {})
        name = f"revoked-{uuid.uuid4().hex[:6]}"
        created = subprocess.run(
            [sys.executable, "-m", "recsys", "keys", "create", name, "--scopes", "recommend",
             "--registry", str(registry.root)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        key = created.stdout.strip()
        served = recommend(server, bearer(key))
        revoke = [sys.executable, "-m", "recsys", "keys", "revoke", name, "--registry", str(registry.root)]
        subprocess.run(revoke, capture_output=True, timeout=60, check=True)
        refused = recommend(server, bearer(key))
    finally:
        process.stop()
    assert missing[0] == 401 and missing[2]["www-authenticate"] == 'Bearer realm="recsys"'
    assert served[0] == 200 and refused[0] == 401 and refused[1]["error"] == "unauthenticated"
