"""Announcements, the retrain trigger and the trainer against the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from recsys.events import FeedbackEvent, ModelEvent, RetrainRequest
from recsys.feedback import FeedbackType
from recsys.gate import GateDecision
from recsys.models.device import Device
from recsys.registry import FileRegistry
from recsys.retraining import Thresholds, feedback_cut, request_id
from recsys.topics import FEEDBACK, MODEL_EVENTS, RETRAIN_REQUESTS
from serving.app import create_app
from serving.settings import ServingSettings
from streams.admin import create_topics
from streams.announce import KafkaAnnouncer
from streams.broker import LocalKafka
from streams.retrain import RetrainTrigger
from tests.conftest import FAST_PARAMS
from tests.integration.test_backbone import end_offsets, read_since
from tests.keys import authorised
from training.pipeline import TrainRequest, train
from training.watch import Trainer

NEVER = 10**9


@pytest.fixture(scope="module", autouse=True)
def topics(kafka: LocalKafka) -> None:
    create_topics(kafka.bootstrap)


@pytest.fixture
def announcer(kafka: LocalKafka) -> Iterator[KafkaAnnouncer]:
    announce = KafkaAnnouncer(kafka.bootstrap)
    yield announce
    announce.close()


def production_registry(root: Path, data: Path, announce: KafkaAnnouncer | None = None) -> FileRegistry:
    registry = FileRegistry(root, announce=announce)
    result = train(TrainRequest(data=data, params=FAST_PARAMS, device=Device.CPU), registry)
    registry.promote(result.manifest.version, force=True)
    return registry


def post_feedback(kafka: LocalKafka, n: int) -> list[FeedbackEvent]:
    kinds = [(FeedbackType.COMPLETE, 200_000), (FeedbackType.LOVE, None), (FeedbackType.SKIP, 4000)]
    events = [
        FeedbackEvent(
            user_id=f"listener-{i % 7}",
            track_id=f"tr{i % 50}",
            type=kinds[i % len(kinds)][0],
            listen_ms=kinds[i % len(kinds)][1],
        )
        for i in range(n)
    ]
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    for e in events:
        producer.send(FEEDBACK.name, key=e.user_id.encode(), value=e.to_bytes())
    producer.flush()
    producer.close()
    return events


def start_group_at_the_end(kafka: LocalKafka, group: str) -> None:
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False)
    tp = TopicPartition(RETRAIN_REQUESTS.name, 0)
    end = consumer.end_offsets([tp])[tp]
    consumer.commit({tp: OffsetAndMetadata(end, "", -1)})
    consumer.close()


def allow(_version: str) -> GateDecision:
    return GateDecision(True, ["allowed by the test"])


def test_a_replica_swaps_as_soon_as_a_promotion_is_announced(
    kafka: LocalKafka, tmp_path: Path, synth_parquet: Path, announcer: KafkaAnnouncer
) -> None:
    registry = production_registry(tmp_path / "models", synth_parquet, announcer)
    second = train(TrainRequest(data=synth_parquet, params=FAST_PARAMS, device=Device.CPU), registry)
    version = second.manifest.version
    # no registry polling: only the announcement can make this replica look
    settings = ServingSettings(
        registry=registry.root, feedback_sink=f"kafka://{kafka.bootstrap}", reload_interval_s=0
    )
    start = end_offsets(kafka.bootstrap, MODEL_EVENTS.name)
    with TestClient(create_app(settings), headers=authorised(settings.registry)) as client:
        app = client.app
        assert app.state.model_events.following.wait(30)  # type: ignore[attr-defined]
        body = {"user_id": "someone", "seed_tracks": ["tr1", "tr2"], "k": 5}
        before = client.post("/v1/recommendations", json=body).json()["model_version"]
        registry.promote(version, force=True)
        deadline, served = time.monotonic() + 20, before
        while time.monotonic() < deadline and served != version:
            served = client.post("/v1/recommendations", json=body).json()["model_version"]
            time.sleep(0.05)
    assert before != version and served == version
    events = [
        ModelEvent.from_bytes(v) for _, v in read_since(kafka.bootstrap, MODEL_EVENTS.name, start, expect=1)
    ]
    assert [(e.kind.value, e.version) for e in events] == [("promoted", version)]


def test_the_trigger_asks_once_per_cut_and_the_trainer_answers_with_the_next_version(
    kafka: LocalKafka, tmp_path: Path, synth_parquet: Path, announcer: KafkaAnnouncer
) -> None:
    registry = production_registry(tmp_path / "models", synth_parquet, announcer)
    already = sum(end_offsets(kafka.bootstrap, FEEDBACK.name).values())  # other tests' events count too
    trigger = RetrainTrigger(registry, kafka.bootstrap, Thresholds(min_events=already + 40, max_age_s=NEVER))
    requests_start = end_offsets(kafka.bootstrap, RETRAIN_REQUESTS.name)
    models_start = end_offsets(kafka.bootstrap, MODEL_EVENTS.name)
    post_feedback(kafka, 20)
    assert trigger.check() is None  # 20 short of the threshold
    post_feedback(kafka, 20)
    request = trigger.check()
    assert request is not None and request.new_events >= already + 40
    assert request.request_id == request_id({}) and request.production_version == "2.1"
    assert trigger.check() is None  # already on the topic
    restarted = RetrainTrigger(registry, kafka.bootstrap, Thresholds(min_events=1, max_age_s=NEVER))
    assert restarted.check() is None  # a restart does not ask again
    sent = read_since(kafka.bootstrap, RETRAIN_REQUESTS.name, requests_start, expect=1)
    assert [RetrainRequest.from_bytes(v).request_id for _, v in sent] == [request.request_id]

    template = TrainRequest(data=synth_parquet, params=FAST_PARAMS, device=Device.CPU)
    trainer = Trainer(registry, kafka.bootstrap, template, gate=allow)
    ends = end_offsets(kafka.bootstrap, FEEDBACK.name)
    version = trainer.handle(request)
    assert version == "2.2"
    lineage = registry.manifest(version).lineage
    assert lineage["retrain_request"] == request.request_id
    assert {int(p): o for p, o in lineage["feedback"]["end_offsets"].items()} == ends
    assert lineage["feedback"]["listeners"] >= 7 and lineage["feedback"]["feedback_pairs"] > 0
    assert lineage["playlists"] == 400 + lineage["feedback"]["listeners"]
    plan = registry.rollout()
    assert [(e.name, e.treatment, e.share) for e in plan.experiments] == [("v2.2", "2.2", 0.01)]
    assert registry.production() == "2.1"
    assert trainer.handle(request) == "2.2"  # the same request again: nothing new is trained
    assert [str(v) for v in registry.versions()] == ["2.1", "2.2"]
    announced = read_since(kafka.bootstrap, MODEL_EVENTS.name, models_start, expect=2)
    kinds = [(e.kind.value, e.version) for e in (ModelEvent.from_bytes(v) for _, v in announced)]
    assert kinds == [("registered", "2.2"), ("rollout_changed", "2.2")]

    assert feedback_cut(registry) == ends  # the cut moved: counting starts over
    post_feedback(kafka, 1)
    assert restarted.check() is None  # one retrained version under test at a time: v2.2 runs
    by_hand = RetrainRequest(
        request_id="retrain-by-hand", production_version="2.1", new_events=1, reason="test"
    )
    assert trainer.handle(by_hand) == "2.3"  # trained, but it waits for v2.2 to end
    plan = registry.rollout()
    assert [e.name for e in plan.experiments] == ["v2.2"] and registry.stage("2.3").value == "candidate"
    registry.stop_experiment("v2.2")
    post_feedback(kafka, 1)
    again = restarted.check()
    assert again is not None and again.new_events == 1 and again.request_id != request.request_id
    trigger.close()
    restarted.close()


def test_a_trainer_killed_mid_run_leaves_no_version_and_the_request_is_trained_after_restart(
    kafka: LocalKafka, tmp_path: Path, synth_parquet: Path
) -> None:
    registry = production_registry(tmp_path / "models", synth_parquet)
    post_feedback(kafka, 30)
    request = RetrainRequest(
        request_id=f"retrain-test-{uuid.uuid4().hex[:8]}",
        production_version="2.1",
        new_events=30,
        reason="test",
    )
    group = f"trainers-{uuid.uuid4().hex[:6]}"
    start_group_at_the_end(kafka, group)  # earlier tests' requests are not this trainer's
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    producer.send(RETRAIN_REQUESTS.name, value=request.to_bytes()).get(timeout=10)
    producer.close()
    log = tmp_path / "trainer.log"

    def start(*, factors: int, iterations: int) -> subprocess.Popen[bytes]:
        env = os.environ | {
            "RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "RECSYS_TRAINER_GROUP": group,
            "RECSYS_REGISTRY": str(registry.root),
        }
        args = ["--data", str(synth_parquet), "--factors", str(factors), "--iterations", str(iterations)]
        with log.open("ab") as out:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "recsys",
                    "train",
                    "--watch",
                    "--no-evaluate",
                    "--device",
                    "cpu",
                    *args,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_for_line(text: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        pytest.fail(f"the trainer never printed {text!r}:\n{log.read_text()[-3000:]}")

    slow = start(factors=512, iterations=500)  # a minute or more of ALS: surely mid-run when killed
    try:
        wait_for_line("fit ALS")
        time.sleep(1)
        slow.send_signal(signal.SIGKILL)
        slow.wait(timeout=30)
    finally:
        if slow.poll() is None:
            slow.kill()
    assert [str(v) for v in registry.versions()] == ["2.1"]  # nothing partial, nothing at all
    fast = start(factors=16, iterations=2)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(registry.versions()) < 2:
            assert fast.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        fast.send_signal(signal.SIGTERM)
        try:
            fast.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fast.kill()
    assert [str(v) for v in registry.versions()] == ["2.1", "2.2"], log.read_text()[-3000:]
    assert registry.manifest("2.2").lineage["retrain_request"] == request.request_id
    assert not any((registry.root / ".staging").glob("*"))
