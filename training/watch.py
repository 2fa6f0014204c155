"""``recsys train --watch``: the trainer process that answers ``retrain-requests``.

For each request it reads the feedback log up to the current end offsets
(:mod:`training.feedback_log`), trains on the base data plus that feedback, registers the
next version with the offsets in its lineage, and, if the promotion gate passes, starts it
as a treatment on a small share of users (or makes it production when there is none).
The registry announces each step on ``model-events`` when ``RECSYS_MODEL_EVENTS`` is set.

A request's offset on the topic is committed only once its version is registered, so a
trainer killed mid-run gets the same request again when it restarts; the registry
publishes a version in one rename, so a killed run leaves no partial version, and a
request whose version already exists (matched by ``lineage.retrain_request``) is not
trained twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from recsys.errors import BackboneUnavailable, InvalidRequest, backbone_failures
from recsys.events.loop_thread import LoopThread
from recsys.events.schemas import RetrainRequest
from recsys.events.topics import RETRAIN_REQUESTS
from recsys.registry.gate import GateDecision
from recsys.registry.plan import Experiment
from recsys.registry.retrain_cut import retrained_under_test, version_for_request
from recsys.registry.store import FileRegistry
from training.feedback_log import read_feedback
from training.pipeline import Progress, TrainRequest, train

log = logging.getLogger(__name__)
T = TypeVar("T")
GROUP_ID = "recsys-trainer"
MAX_TRAINING_MS = 6 * 3600 * 1000
"""The consumer stays in its group while one request trains for up to this long."""
START_TIMEOUT_S = 30.0
POLL_MS = 1000
FIRST_SHARE = 0.01
EXPERIMENT_TOLERANCE = 0.02
"""A retrained version starts its experiment when its offline metric is within 2% of
production's (and beats the baselines): the experiment, not the offline split, decides."""


class Trainer:
    """Turns retrain requests into registered versions.

    Parameters
    ----------
    registry : FileRegistry
        Where versions are registered (with its announcer, if any).
    bootstrap : str
        ``host:port`` of a broker.
    template : TrainRequest
        Base data and parameters of every retraining.
    share : float
        Share of users the new version first gets.
    progress : callable, optional
        Receives a line per step (default: the log).
    gate : callable, optional
        Decides whether a new version may serve (default: the registry's promotion gate,
        with ``EXPERIMENT_TOLERANCE``).
    group_id : str
        Consumer group of the trainers (one request goes to one of them).
    """

    def __init__(
        self,
        registry: FileRegistry,
        bootstrap: str,
        template: TrainRequest,
        *,
        share: float = FIRST_SHARE,
        progress: Callable[[str], None] | None = None,
        gate: Callable[[str], GateDecision] | None = None,
        group_id: str = GROUP_ID,
    ) -> None:
        self.registry, self.bootstrap, self.template, self.share = registry, bootstrap, template, share
        self.progress = progress or (lambda message: log.info("%s", message))
        self.gate = gate or (
            lambda version: registry.check_promotion(version, tolerance=EXPERIMENT_TOLERANCE)
        )
        self.group_id = group_id

    def handle(self, request: RetrainRequest) -> str | None:
        """Train for ``request``; returns the version it registered (or had registered before)."""
        done = version_for_request(self.registry, request.request_id)
        if done is not None:
            self.progress(f"{request.request_id}: already trained as {done}")
            return done
        self.progress(f"{request.request_id}: reading the feedback log ({request.reason})")
        log_path = self.registry.root / "cache" / "feedback" / f"{request.request_id}.parquet"
        cut = read_feedback(self.bootstrap, log_path)
        if cut.path is None:
            self.progress(f"{request.request_id}: the feedback log is empty; nothing to train")
            return None
        self.progress(f"{request.request_id}: training on the base data + {cut.events:,} feedback events")
        job = dataclasses.replace(
            self.template,
            feedback=cut.path,
            lineage={"feedback": cut.lineage(), "retrain_request": request.request_id},
            promote=False,
        )
        try:
            result = train(job, self.registry, Progress(stage=lambda name: self.progress(f"  {name}")))
        finally:
            cut.path.unlink(missing_ok=True)
        version = result.manifest.version
        self.progress(f"{request.request_id}: registered {version}")
        self._start(version)
        return version

    def _start(self, version: str) -> None:
        decision = self.gate(version)
        if not decision.allowed:
            self.progress(f"{version} stays a candidate: " + "; ".join(decision.reasons))
            return
        if self.registry.production() is None:
            self.registry.promote(version)
            self.progress(f"{version} is production (there was none)")
            return
        running = retrained_under_test(self.registry.rollout())
        if running:  # one retrained version under test at a time: its numbers must settle first
            self.progress(f"{version} stays a candidate: experiment {running} is still running")
            return
        self.registry.set_experiment(Experiment(name=f"v{version}", treatment=version, share=self.share))
        self.progress(f"{version} serves {self.share:.0%} of users (experiment v{version})")

    def run(self, stop: threading.Event | None = None) -> None:
        """Consume ``retrain-requests`` until ``stop`` is set.

        The consumer lives on an event loop of its own (:class:`.LoopThread`), which keeps it
        in its group (heartbeats) while a request trains here, in the calling thread.

        Raises
        ------
        BackboneUnavailable
            When the broker cannot be reached, or a request's offset cannot be committed.
        """
        stop = stop or threading.Event()
        loop = LoopThread("trainer-consumer")
        consumer: Any = None

        def kafka(call: Coroutine[Any, Any, T]) -> T:
            with backbone_failures(f"the trainer lost the event backbone at {self.bootstrap}"):
                return loop.run(call)

        try:
            consumer, busy = kafka(_started_consumer(self.bootstrap, self.group_id))
            while not stop.is_set():
                for records in kafka(consumer.getmany(timeout_ms=POLL_MS, max_records=1)).values():
                    for record in records:
                        kafka(busy.begin())
                        try:
                            self._handle_bytes(record.value)
                            kafka(consumer.commit())
                        finally:
                            kafka(busy.end())
        finally:
            _stop(loop, consumer)

    def _handle_bytes(self, value: bytes | None) -> None:
        try:
            request = RetrainRequest.from_bytes(value or b"")
        except InvalidRequest as exc:
            log.warning("skipped an invalid retrain request: %s", exc.message)
            return
        self.handle(request)


class _FinishFirst:
    """Holds a rebalance of the trainers' group until the request in training is committed.

    The consumer's loop answers heartbeats and rebalances on its own, while a request trains
    in another thread; without this a rebalance would hand that request to another trainer
    before its offset is committed. The group waits for this trainer up to the rebalance
    timeout (:data:`MAX_TRAINING_MS`). Its methods run on the consumer's loop.
    """

    def __init__(self) -> None:
        self._idle = asyncio.Event()
        self._idle.set()

    async def begin(self) -> None:
        self._idle.clear()

    async def end(self) -> None:
        self._idle.set()

    async def on_partitions_revoked(self, revoked: object) -> None:
        await self._idle.wait()

    async def on_partitions_assigned(self, assigned: object) -> None:
        return None


async def _started_consumer(bootstrap: str, group_id: str) -> tuple[Any, _FinishFirst]:
    """The trainers' group consumer of ``retrain-requests``, started, and its rebalance listener."""
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

    ConsumerRebalanceListener.register(_FinishFirst)  # the interface subscribe() checks
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id="recsys-trainer",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=1,
        max_poll_interval_ms=MAX_TRAINING_MS,
        rebalance_timeout_ms=MAX_TRAINING_MS,
    )
    busy = _FinishFirst()
    try:
        await asyncio.wait_for(consumer.start(), START_TIMEOUT_S)
        consumer.subscribe([RETRAIN_REQUESTS.name], listener=busy)
    except BaseException:
        await consumer.stop()
        raise
    return consumer, busy


def _stop(loop: LoopThread, consumer: Any) -> None:
    """Stop the consumer (leaving its group) and then its loop."""
    try:
        if consumer is not None:
            with backbone_failures("the trainer's consumer did not stop cleanly"):
                loop.run(consumer.stop(), START_TIMEOUT_S)
    except BackboneUnavailable as exc:
        log.warning("%s", exc.message)
    finally:
        loop.close()
