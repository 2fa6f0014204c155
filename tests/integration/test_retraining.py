"""Announcements, the retrain trigger and the trainer against the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi.testclient import TestClient

from deploy.kafka_launcher import LocalKafka
from recsys.events.schemas import FeedbackEvent, ModelEvent, RetrainRequest
from recsys.events.topics import FEEDBACK, MODEL_EVENTS, RETRAIN_REQUESTS
from recsys.events.weights import FeedbackType
from recsys.models.device import Device
from recsys.registry.gate import GateDecision
from recsys.registry.retrain_cut import Thresholds, feedback_cut, request_id
from recsys.registry.store import FileRegistry
from serving.app import create_app
from serving.settings import ServingSettings
from streams.admin import create_topics
from streams.kafka_announcer import KafkaAnnouncer
from streams.retrain import RetrainTrigger
from tests.conftest import FAST_PARAMS
from tests.integration.test_backbone import end_offsets, read_since, send_all
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
    send_all(kafka.bootstrap, FEEDBACK.name, [(e.user_id.encode(), e.to_bytes()) for e in events])
    return events


def start_group_at_the_end(kafka: LocalKafka, group: str) -> None:
    async def commit_the_end() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tp = TopicPartition(RETRAIN_REQUESTS.name, 0)
            consumer.assign([tp])  # aiokafka commits only for assigned partitions
            end = (await consumer.end_offsets([tp]))[tp]
            await consumer.commit({tp: end})
        finally:
            await consumer.stop()

    asyncio.run(commit_the_end())


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
        registry=registry.root,
        feedback_sink=f"kafka://{kafka.bootstrap}",
        kafka_bootstrap=kafka.bootstrap,
        reload_interval_s=0,
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
    send_all(kafka.bootstrap, RETRAIN_REQUESTS.name, [(None, request.to_bytes())])
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


class SlowTrainer(Trainer):
    """Records each request it gets and trains until ``release`` is set."""

    def __init__(self, registry: FileRegistry, bootstrap: str, group: str) -> None:
        template = TrainRequest(data=Path("unused"), params=FAST_PARAMS, device=Device.CPU)
        super().__init__(registry, bootstrap, template, group_id=group)
        self.got: list[str] = []
        self.training, self.release = threading.Event(), threading.Event()

    def handle(self, request: RetrainRequest) -> str | None:
        self.got.append(request.request_id)
        self.training.set()
        assert self.release.wait(120)
        return None


def test_a_rebalance_waits_until_the_request_in_training_is_committed(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    """A trainer joining the group while another trains never gets the request in training:
    the group's rebalance waits until its offset is committed."""
    group = f"trainers-{uuid.uuid4().hex[:6]}"
    start_group_at_the_end(kafka, group)
    request = RetrainRequest(
        request_id=f"retrain-slow-{uuid.uuid4().hex[:8]}", production_version="2.1", new_events=1, reason="t"
    )
    send_all(kafka.bootstrap, RETRAIN_REQUESTS.name, [(None, request.to_bytes())])
    first = SlowTrainer(FileRegistry(tmp_path / "models"), kafka.bootstrap, group)
    stop = threading.Event()
    running = threading.Thread(target=first.run, args=(stop,), daemon=True)
    running.start()
    assert first.training.wait(60)

    async def second_member(seconds: float) -> list[bytes]:
        """Join the group and read what it is given for ``seconds``."""
        consumer = AIOKafkaConsumer(
            RETRAIN_REQUESTS.name,
            bootstrap_servers=kafka.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        seen: list[bytes] = []
        try:
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    batches = await asyncio.wait_for(consumer.getmany(timeout_ms=500), left)
                    seen.extend(record.value for records in batches.values() for record in records)
            return seen
        finally:
            await consumer.stop()

    finish = threading.Timer(5.0, first.release.set)  # training ends while the second one waits to join
    finish.start()
    try:
        seen = asyncio.run(second_member(25.0))
    finally:
        finish.cancel()
        first.release.set()
        stop.set()
        running.join(30)
    assert first.got == [request.request_id] and not running.is_alive()
    assert [RetrainRequest.from_bytes(v).request_id for v in seen] == []
