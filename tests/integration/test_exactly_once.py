"""Exactly once under SIGKILL with many listeners: a worker killed after counting events it
has not yet committed must, on restart, count each of them once, from its own folder and
from an empty one."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from recsys.events import FeedbackEvent
from recsys.feedback import FeedbackType
from recsys.topics import FEEDBACK
from streams.broker import LocalKafka
from tests.integration.test_streams import Worker, produce

COMMIT_INTERVAL_S = "30"
"""Long enough that the kill lands between two of the worker's commits."""


def listeners(version: str, first: int, count: int, *, seed: int) -> list[FeedbackEvent]:
    """Two listening events each for listeners ``first .. first + count``."""
    return [
        FeedbackEvent(
            user_id=f"listener-{seed}-{i}",
            track_id=f"tr{i}",
            type=kind,
            listen_ms=1000,
            model_version=version,
            variant="control",
        )
        for i in range(first, first + count)
        for kind in (FeedbackType.PLAY, FeedbackType.COMPLETE)
    ]


def behind(kafka: LocalKafka, group: str) -> int:
    """Feedback messages not yet covered by the worker's committed offsets."""
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap)
    try:
        partitions = [TopicPartition(FEEDBACK.name, p) for p in range(FEEDBACK.partitions)]
        ends = consumer.end_offsets(partitions)
        committed = admin.list_group_offsets({group: None}).get(group, {})
        return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in partitions)
    finally:
        admin.close()
        consumer.close()


def wait_until_committed(kafka: LocalKafka, group: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while behind(kafka, group) > 0:
        assert time.monotonic() < deadline, "the worker did not commit"
        time.sleep(1)


def test_a_worker_killed_between_commits_counts_every_listener_once(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    """240 listeners, 200 of them first seen after the worker's last commit: killed with all
    of them counted locally, the worker restarts and counts each event and listener once, and
    a worker of the same application with an empty folder rebuilds the same counts."""
    seed = 1
    version = f"6.{uuid.uuid4().int % 10_000}"
    arm = f"{version}|control"
    committed_first = listeners(version, 0, 40, seed=seed)
    uncommitted = listeners(version, 40, 160 + 40 * seed, seed=seed)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    worker = Worker(kafka, tmp_path / "a")
    worker.env["BROKER_COMMIT_INTERVAL"] = COMMIT_INTERVAL_S
    group = worker.env["RECSYS_APP_ID"]
    worker.start()
    try:
        produce(kafka, [(e.user_id.encode(), e.to_bytes()) for e in committed_first])
        worker.wait_for(arm, len(committed_first))
        wait_until_committed(kafka, group)
        produce(kafka, [(e.user_id.encode(), e.to_bytes()) for e in uncommitted])
        counted = worker.wait_for(arm, len(committed_first) + len(uncommitted))
        assert counted["users"] == len(committed_first + uncommitted) // 2
        worker.kill()  # counted in the local tables, not yet committed
        assert behind(kafka, group) > 0, "the kill came after a commit: nothing was at stake"
        worker.start()
        total = len(committed_first) + len(uncommitted)
        after = worker.wait_for(arm, total, timeout_s=240)
        assert (after["events"], after["users"], after["plays"]) == (total, total // 2, total)
    finally:
        worker.stop()
    empty = Worker(kafka, tmp_path / "b")
    empty.env["RECSYS_APP_ID"] = group  # the same application, restoring from its changelogs
    empty.start()
    try:
        rebuilt = empty.wait_for(arm, total, timeout_s=240)
        assert (rebuilt["events"], rebuilt["users"], rebuilt["plays"]) == (total, total // 2, total)
    finally:
        empty.stop()
