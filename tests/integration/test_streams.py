"""The stream worker against the real broker: exact aggregates, dead letters, hates within seconds.

SIGKILLs of the worker, the API and the broker: ``test_exactly_once.py``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from deploy.kafka_launcher import LocalKafka, free_port
from recsys.events.schemas import DeadLetter, FeedbackEvent
from recsys.events.topics import DEAD_LETTER, FEEDBACK
from recsys.events.weights import FeedbackType
from recsys.registry.store import FileRegistry
from serving.app import create_app
from serving.settings import ServingSettings
from tests.integration.test_backbone import end_offsets, read_since, send_all
from tests.keys import authorised
from training.pipeline import TrainResult


class Worker:
    """``recsys stream worker`` in a subprocess, with its own state folder and web port."""

    def __init__(
        self, kafka: LocalKafka, folder: Path, registry: Path | None = None, store: str = "rocksdb://"
    ) -> None:
        self.port = free_port()
        self.env = os.environ | {
            "RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "RECSYS_APP_ID": f"test-{uuid.uuid4().hex[:8]}",
            "RECSYS_DATA_DIR": str(folder),
            "RECSYS_STORE": store,
            # no retrain requests: the broker is shared, and the trigger has tests of its own
            "RECSYS_RETRAIN_CHECK_S": "0",
            "RECSYS_REGISTRY": str(registry or folder / "no-models"),
            # a killed worker's partitions come back to its restart after 10 s, not 60 s
            "RECSYS_SESSION_TIMEOUT_S": "10",
        }
        self.log = folder / "worker.log"
        self.log_start = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90) -> None:
        self.env["RECSYS_WEB_PORT"] = str(self.port)
        self.log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "recsys", "stream", "worker", "--loglevel", "info"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the supervisor and the worker
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the stream worker exited:\n{self.log.read_text()[-3000:]}")
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"the stream worker did not become ready:\n{self.log.read_text()[-3000:]}")

    def ready(self) -> bool:
        """Whether this start of the worker has recovered its tables and begun processing."""
        with self.log.open("rb") as log:
            log.seek(self.log_start)
            return b"Worker ready" in log.read()

    def stats(self) -> dict[str, dict[str, int]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats/", timeout=2) as response:
            data: dict[str, dict[str, int]] = json.loads(response.read())
            return data

    def wait_for(self, arm: str, events: int, timeout_s: float = 60) -> dict[str, int]:
        deadline, last = time.monotonic() + timeout_s, {}
        while time.monotonic() < deadline:
            try:
                last = self.stats().get(arm, {})
            except OSError:  # restarting (the broker went away and came back)
                time.sleep(0.5)
                continue
            if last.get("events", 0) >= events:
                time.sleep(1.0)  # anything beyond the expected count would show up now
                return self.stats()[arm]
            time.sleep(0.3)
        pytest.fail(f"{arm}: expected {events} events, saw {last}\n{self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the worker and its supervisor at once (no clean shutdown of anything)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):  # nothing of the group may outlive the test
                os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture
def worker(
    request: pytest.FixtureRequest,
    kafka: LocalKafka,
    tmp_path: Path,
    trained: tuple[FileRegistry, TrainResult],
) -> Iterator[Worker]:
    """A running worker; RocksDB tables unless the test asks for another store (indirect param)."""
    store = getattr(request, "param", "rocksdb://")
    running = Worker(kafka, tmp_path, trained[0].root, store=store)
    running.start()
    yield running
    running.stop()


def events_for(version: str, n: int) -> list[FeedbackEvent]:
    kinds = [
        FeedbackType.PLAY,
        FeedbackType.SKIP,
        FeedbackType.LOVE,
        FeedbackType.HATE,
        FeedbackType.COMPLETE,
    ]
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        listening = kind in (FeedbackType.PLAY, FeedbackType.SKIP, FeedbackType.COMPLETE)
        out.append(
            FeedbackEvent(
                user_id=f"user-{i % 9}",
                track_id=f"tr{i}",
                type=kind,
                listen_ms=1000 if listening else None,
                model_version=version,
                variant="control",
                platform="ios" if i % 9 < 3 else "android",  # each listener on one platform
            )
        )
    return out


def produce(kafka: LocalKafka, payloads: list[tuple[bytes, bytes]]) -> None:
    send_all(kafka.bootstrap, FEEDBACK.name, list(payloads))


@pytest.mark.parametrize("worker", ["rocksdb://", "memory://"], indirect=True)
def test_aggregates_count_each_event_once_and_bad_ones_go_to_the_dead_letter_topic(
    kafka: LocalKafka, worker: Worker
) -> None:
    version = f"9.{uuid.uuid4().int % 10_000}"
    events = events_for(version, 100)
    dead_before = end_offsets(kafka.bootstrap, DEAD_LETTER.name)
    payloads = [(e.user_id.encode(), e.to_bytes()) for e in events]
    redelivered = payloads[:10]  # the same events again: idempotent by event_id
    produce(kafka, [*payloads, (b"user-x", b"{not json"), *redelivered])
    stats = worker.wait_for(f"{version}|control", 100)
    plays = Counter(e.user_id for e in events if e.listen_ms)
    squares = float(sum(n * n for n in plays.values()))
    per_user = {
        kind: Counter(e.user_id for e in events if e.type is kind)
        for kind in (FeedbackType.HATE, FeedbackType.SKIP)
    }
    hates, skips = per_user[FeedbackType.HATE], per_user[FeedbackType.SKIP]
    assert stats == {
        "users": 9,
        "events": 100,
        "plays": 60,
        "completes": 20,
        "skips": 20,
        "loves": 20,
        "hates": 20,
        "listen_ms": 60_000,
        "listen_s_sq": squares,  # each listening event here is 1 s
        "plays_sq": squares,
        "hates_sq": float(sum(n * n for n in hates.values())),
        "hates_plays": float(sum(n * plays[u] for u, n in hates.items())),
        "skips_sq": float(sum(n * n for n in skips.values())),
        "skips_plays": float(sum(n * plays[u] for u, n in skips.items())),
    }
    slices = worker.stats()  # each arm is also split by the events' platform
    ios, android = slices[f"{version}|control@platform=ios"], slices[f"{version}|control@platform=android"]
    assert (ios["users"], ios["events"], android["users"], android["events"]) == (3, 34, 6, 66)
    [(_, letter)] = read_since(kafka.bootstrap, DEAD_LETTER.name, dead_before, expect=1)
    parsed = DeadLetter.from_bytes(letter)
    assert (
        parsed.source_topic == FEEDBACK.name
        and parsed.payload == "{not json"
        and "Invalid JSON" in parsed.reason
    )


def test_a_hate_is_excluded_from_that_listeners_recommendations_within_seconds(
    kafka: LocalKafka, worker: Worker, trained: tuple[FileRegistry, TrainResult]
) -> None:
    registry, _ = trained
    settings = ServingSettings(
        registry=registry.root,
        feedback_sink=f"kafka://{kafka.bootstrap}",
        kafka_bootstrap=kafka.bootstrap,
        reload_interval_s=0,
    )
    user = f"listener-{uuid.uuid4().hex[:6]}"
    body = {"user_id": user, "seed_tracks": ["tr1", "tr2", "tr3"], "k": 10}
    with TestClient(create_app(settings), headers=authorised(settings.registry)) as client:
        top = client.post("/v1/recommendations", json=body).json()["items"][0]["track_id"]
        accepted = client.post("/v1/feedback", json={"user_id": user, "track_id": top, "type": "hate"})
        assert accepted.status_code == 202
        start, seen_at = time.monotonic(), None
        while time.monotonic() - start < 30:
            tracks = [i["track_id"] for i in client.post("/v1/recommendations", json=body).json()["items"]]
            if top not in tracks:
                seen_at = time.monotonic() - start
                break
            time.sleep(0.05)
        other = client.post("/v1/recommendations", json={**body, "user_id": "someone-else"}).json()
    assert seen_at is not None, "the hated track was still recommended after 30 s"
    assert seen_at < 10
    assert top in [i["track_id"] for i in other["items"]]  # only that listener is affected
