"""Exactly once under SIGKILL: feedback posted over HTTP for thousands of listeners, while
the stream worker, the API and the broker are SIGKILLed at seeded moments (a worker right
after a request, between commits, while it recovers, while a second worker takes over half
of its partitions), is counted once per event id in the ``feedback`` topic: by the worker
that ends the run and by a worker of the same application rebuilt from the changelogs alone.

``EXACTLY_ONCE_SEEDS`` (default ``1``) lists the seeds to run: each seed draws the order of
the moments, the delays and the commit interval (``benchmarks/exactly_once_faults.py`` runs
many)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from deploy.kafka_launcher import LocalKafka
from recsys.events.schemas import FeedbackEvent
from recsys.events.topics import FEEDBACK
from recsys.events.weights import FeedbackType
from recsys.experiments.aggregates import add_to_arm, add_to_user, arms_of
from recsys.registry.store import FileRegistry
from tests.integration.conftest import running_broker
from tests.integration.test_serve_process import ServeProcess
from tests.integration.test_streams import Worker
from training.pipeline import TrainResult

BATCH = 100
LISTENERS_PER_BATCH = 80
"""Each batch has about half its listeners new (the window moves by half its width): a
listener's first events are what a worker's local state is most often wrong about."""
KINDS = (FeedbackType.PLAY, FeedbackType.COMPLETE, FeedbackType.SKIP, FeedbackType.LOVE, FeedbackType.HATE)


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of this module's own: a new worker has only this module's events to replay."""
    yield from running_broker(tmp_path_factory)


def feedback(rng: random.Random, first: int, version: str) -> dict[str, Any]:
    """One event of one of the listeners ``first .. first + LISTENERS_PER_BATCH``, in one of
    two arms, with one of two platforms."""
    user = rng.randrange(first, first + LISTENERS_PER_BATCH)
    kind = rng.choice(KINDS)
    listening = kind in (FeedbackType.PLAY, FeedbackType.COMPLETE, FeedbackType.SKIP)
    return FeedbackEvent(
        user_id=f"listener-{user}",
        track_id=f"tr{rng.randrange(500)}",
        type=kind,
        listen_ms=rng.randrange(1, 300_000) if listening else None,
        model_version=version,
        variant="treatment" if user % 2 else "control",
        platform="ios" if user % 3 else "android",
    ).model_dump(mode="json")


class Poster(threading.Thread):
    """Posts batches over HTTP until told to stop; every 7th request resends an earlier batch
    (a client retrying after a timeout). A request that is refused (503) or cut off (the API
    killed) is resent, to whichever API then runs, until answered 202. Keeps the event ids
    each 202 acknowledged."""

    def __init__(self, api: ServeProcess, seed: int, version: str) -> None:
        super().__init__(daemon=True)
        self.api, self.rng, self.version = api, random.Random(seed), version
        self.sent: list[list[dict[str, Any]]] = []
        self.accepted: set[str] = set()
        self.resent = 0
        self.requests = threading.Semaphore(0)
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.post_one()
                self.requests.release()
                time.sleep(self.rng.uniform(0.0, 0.15))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def post_one(self) -> None:
        if self.sent and len(self.sent) % 7 == 0:
            batch = self.rng.choice(self.sent)
        else:
            first = len(self.sent) * LISTENERS_PER_BATCH // 2
            batch = [feedback(self.rng, first, self.version) for _ in range(BATCH)]
        body = json.dumps({"events": batch}).encode()
        deadline = time.monotonic() + 180
        while (ids := self.post(body)) is None:
            assert time.monotonic() < deadline, "no 202 in 180 s"
            self.resent += 1
            time.sleep(0.5)
        self.accepted.update(ids)
        self.sent.append(batch)

    def post(self, body: bytes) -> list[str] | None:
        """The event ids of a 202, or ``None`` when the request must be resent."""
        request = urllib.request.Request(
            f"{self.api.base}/v1/feedback",
            data=body,
            headers={"Content-Type": "application/json"} | self.api.auth,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 202
                return list(json.loads(response.read())["event_ids"])
        except urllib.error.HTTPError as exc:
            assert exc.code == 503, f"{exc.code}: {exc.read()[:500]!r}"
            return None
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException):
            return None  # cut off: the API was killed

    def wait_requests(self, count: int) -> None:
        for _ in range(count):
            assert self.requests.acquire(timeout=240), f"no 202 for a while: {self.error!r}"


def topic_events(kafka: LocalKafka, version: str) -> list[FeedbackEvent]:
    """Every event of ``version`` in the feedback topic, each event id once, in partition order."""
    seen: set[str] = set()
    events = []
    for event in asyncio.run(feedback_messages(kafka, idle_s=5.0)):
        if event.model_version == version and str(event.event_id) not in seen:
            seen.add(str(event.event_id))
            events.append(event)
    return events


async def feedback_messages(kafka: LocalKafka, *, idle_s: float) -> list[FeedbackEvent]:
    """The feedback topic from its start, until no message arrives for ``idle_s``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False)
    await consumer.start()
    events = []
    try:
        consumer.assign([TopicPartition(FEEDBACK.name, p) for p in range(FEEDBACK.partitions)])
        await consumer.seek_to_beginning()
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_s:
            batches = await consumer.getmany(timeout_ms=200)
            if batches:
                idle_since = time.monotonic()
            for records in batches.values():
                events.extend(FeedbackEvent.from_bytes(message.value) for message in records)
    finally:
        await consumer.stop()
    return events


def expected_arms(events: list[FeedbackEvent]) -> dict[str, dict[str, float]]:
    """The counters of every arm (and slice) with each of ``events`` counted once."""
    arms: dict[str, dict[str, float]] = defaultdict(dict)
    users: dict[tuple[str, str], dict[str, int]] = {}
    for event in events:
        for arm in arms_of(event):
            key = (event.user_id, arm)
            before = users.get(key)
            after = users[key] = add_to_user(before or {}, event)
            arms[arm] = add_to_arm(
                arms[arm], event, new_user=before is None, user_before=before or {}, user_after=after
            )
    return dict(arms)


def counted_naively(events: list[FeedbackEvent], arm: str) -> tuple[int, int, int]:
    """Events, listeners and hates of ``version|variant`` arm ``arm``, by plain counting."""
    mine = [e for e in events if f"{e.model_version}|{e.variant}" == arm]
    return len(mine), len({e.user_id for e in mine}), sum(e.type == FeedbackType.HATE for e in mine)


def behind(kafka: LocalKafka, group: str) -> int:
    """Feedback messages not yet covered by the group's committed offsets."""
    return asyncio.run(messages_behind(kafka, group))


async def messages_behind(kafka: LocalKafka, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
    try:
        await admin.start()
        await consumer.start()
        partitions = [TopicPartition(FEEDBACK.name, p) for p in range(FEEDBACK.partitions)]
        ends = await consumer.end_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(group)
        return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in partitions)
    finally:
        await admin.close()
        await consumer.stop()


def counted_once(
    worker: Worker, kafka: LocalKafka, events: list[FeedbackEvent], timeout_s: float = 240
) -> None:
    """Wait until ``worker`` has committed every feedback message and its counters are the
    counters of ``events``; fail with the difference after ``timeout_s``. (Counters only grow:
    a count reached and then still equal two seconds later is final.)"""
    group = worker.env["RECSYS_APP_ID"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, AssertionError):  # restarting or recovering
            if behind(kafka, group) == 0:
                assert_counted_once(worker.stats(), events)
                time.sleep(2)
                break
        time.sleep(1)
    stats = worker.stats()
    try:
        assert_counted_once(stats, events)
    except AssertionError as error:  # say how far the worker got, and what it counted
        lag: int | str
        try:
            lag = behind(kafka, group)
        except OSError as unreachable:
            lag = repr(unreachable)
        arms = {name: counters for name, counters in stats.items() if name.count("|") == 1}
        folder = Path(worker.env["RECSYS_DATA_DIR"]).name
        raise AssertionError(
            f"{error}\nworker {folder}: messages not committed: {lag}; arms counted: {arms}"
        ) from error


def assert_counted_once(stats: Mapping[str, Mapping[str, float]], events: list[FeedbackEvent]) -> None:
    expected = expected_arms(events)
    for arm in ("control", "treatment"):
        name = f"{events[0].model_version}|{arm}"
        events_, users, hates = counted_naively(events, name)
        got = stats.get(name, {})
        assert (got.get("events"), got.get("users"), got.get("hates")) == (events_, users, hates), name
    for arm, counters in expected.items():
        assert stats.get(arm) == pytest.approx(counters), arm


SESSION_TIMEOUT_S = 6
"""The broker's shortest session: a killed worker's partitions move on after this long."""
SEEDS = [int(seed) for seed in os.environ.get("EXACTLY_ONCE_SEEDS", "1").split(",")]
MOMENTS = ("after a request", "between commits", "while recovering", "second worker", "api", "broker")


class Run:
    """The processes of one seeded run, and what each moment does to them."""

    def __init__(self, kafka: LocalKafka, folder: Path, registry: FileRegistry, rng: random.Random) -> None:
        self.kafka, self.folder, self.registry, self.rng = kafka, folder, registry, rng
        self.worker = self.new_worker("a")
        self.worker.env["BROKER_COMMIT_INTERVAL"] = str(rng.choice([0.5, 2.8, 10.0]))
        self.second: Worker | None = None
        self.api = ServeProcess(registry, feedback_sink=f"kafka://{kafka.bootstrap}", feedback_timeout_s="2")

    def new_worker(self, name: str) -> Worker:
        (self.folder / name).mkdir()
        worker = Worker(self.kafka, self.folder / name, self.registry.root)
        worker.env["RECSYS_SESSION_TIMEOUT_S"] = str(SESSION_TIMEOUT_S)
        if name != "a":
            worker.env["RECSYS_APP_ID"] = self.worker.env["RECSYS_APP_ID"]
        return worker

    def strike(self, moment: str) -> None:
        rng, worker = self.rng, self.worker
        if moment == "between commits":
            time.sleep(rng.uniform(0.2, 3.0))
        elif moment == "while recovering":
            worker.kill()
            worker.start()
            time.sleep(rng.uniform(0.0, 2 * SESSION_TIMEOUT_S))  # before, during, after its rebalance
        elif moment == "second worker":  # half the partitions move to it, then it has them all
            self.second = self.new_worker("second")
            self.second.start()
            time.sleep(rng.uniform(2.0, 2 * SESSION_TIMEOUT_S))
        elif moment == "api":
            self.api.kill()
            time.sleep(rng.uniform(0.0, 2.0))
            self.api.start()
            return
        elif moment == "broker":
            self.kafka.kill()
            time.sleep(rng.uniform(0.0, 3.0))
            self.kafka.start()
            return
        worker.kill()
        worker.start()

    def stop(self) -> None:
        self.api.stop()
        for worker in (self.second, self.worker):
            if worker is not None:
                worker.stop()


@pytest.mark.parametrize("seed", SEEDS)
def test_feedback_posted_while_processes_are_killed_is_counted_once(
    kafka: LocalKafka, tmp_path: Path, trained: tuple[FileRegistry, TrainResult], seed: int
) -> None:
    rng = random.Random(seed)
    version = f"6.{seed}"
    run = Run(kafka, tmp_path, trained[0], rng)
    run.worker.start()
    run.api.start()
    poster = Poster(run.api, seed, version)
    try:
        poster.start()
        moments = rng.sample(MOMENTS, len(MOMENTS))
        for moment in moments:
            poster.wait_requests(rng.randrange(2, 5))
            run.strike(moment)
        poster.wait_requests(2)
        poster.stopping.set()
        poster.join(timeout=240)
        assert poster.error is None, repr(poster.error)
        assert poster.resent > 0, "killing the API and the broker left no request to resend"
        events = topic_events(kafka, version)
        assert {str(e.event_id) for e in events} == poster.accepted  # a 202 is durable, and nothing else
        if run.second is not None:  # the first worker ends the run with every partition
            run.second.stop()
        counted_once(run.worker, kafka, events)
    finally:
        poster.stopping.set()
        run.stop()
    rebuilt = run.new_worker("rebuilt")  # the same application, from its changelogs alone
    rebuilt.start()
    try:
        counted_once(rebuilt, kafka, events)
    finally:
        rebuilt.stop()
    report(seed, moments, run, events, poster)


def report(seed: int, moments: list[str], run: Run, events: list[FeedbackEvent], poster: Poster) -> None:
    """One JSON line per passed seed to ``EXACTLY_ONCE_REPORT``, when set (the benchmark's record)."""
    path = os.environ.get("EXACTLY_ONCE_REPORT")
    if path:
        line = {
            "seed": seed,
            "moments": moments,
            "commit_interval_s": float(run.worker.env["BROKER_COMMIT_INTERVAL"]),
            "events": len(events),
            "listeners": len({e.user_id for e in events}),
            "requests": len(poster.sent),
            "requests_resent": poster.resent,
        }
        with open(path, "a") as out:
            out.write(json.dumps(line) + "\n")
