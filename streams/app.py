"""The stream processors (faust-streaming): feedback aggregation, with exactly-once processing.

``recsys stream worker`` (or ``faust -A streams.main worker``) runs them. The ``feedback``
topic is keyed by user, so everything about one user, including redeliveries of one
event, lands in one partition; every table below is keyed so that its entries live with
that partition's state, which Kafka transactions then commit together with the consumer
offsets (``processing_guarantee="exactly_once"``). A worker killed at any point restarts
from its changelogs and counts each event exactly once.

Tables (written in batches by :mod:`streams.aggregation`):

- ``arm-stats``: per ``version|variant|partition``, the counters of :mod:`recsys.experiments.aggregates`.
- ``user-state``: per user, loved and hated tracks, recent plays, the arms the user was
  counted in, and the ids of the user's recent events (idempotency).

The leader also runs the retrain trigger (:mod:`streams.retrain`) on a timer.

On a love, hate (or their undo) or a complete, the speed layer (:mod:`streams.speed`)
publishes the user's fresh vector and hate set to ``user-updates``; every serving replica
applies it within seconds. Malformed events go to the dead-letter topic with the reason;
the agent keeps running.
``GET /stats/`` and ``GET /users/{user_id}/`` on the worker's web port serve the tables.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from faust.web import Request, Response, View

from recsys.events.topics import DEAD_LETTER, FEEDBACK
from recsys.experiments.aggregates import total
from recsys.registry.retrain_cut import Thresholds
from recsys.registry.store import FileRegistry
from streams.aggregation import FLUSH_INTERVAL_S, Aggregator
from streams.faust_internals import PartitionAssignor, TableManager, Transport, store_url
from streams.retrain import RetrainTrigger
from streams.settings import StreamSettings
from streams.speed import SpeedLayer

log = logging.getLogger(__name__)
PRODUCER_BATCH_BYTES = 1_000_000
"""Size of the record batches the aggregator builds per partition (:mod:`streams.bulk`): at
the default 16 kB only a handful of changelog records would travel per round trip."""

STREAM_BUFFER = 32_768
"""Events fetched ahead of the agent. faust stops fetching a partition whose buffer is 80% full
and resumes it at 40%; while no partition is fetching, its fetcher sleeps a whole second. At
faust's default of 4,096 the agent emptied the buffer within that second and then waited (a
fifth of the worker's time, in the worker benchmark); 40% of this size is two seconds of work."""


def create_app(settings: StreamSettings | None = None) -> faust.App:
    """The faust application with its topics, tables, agents and web views."""
    settings = settings or StreamSettings()
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=store_url(settings.store),
        datadir=str(settings.data_dir),
        processing_guarantee="exactly_once",
        # a partition's store is restored from its changelog whenever it becomes active here
        # (streams.faust_internals), so standby copies would only cost every worker the reading
        table_standby_replicas=0,
        topic_partitions=FEEDBACK.partitions,
        topic_replication_factor=1,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_host="127.0.0.1",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        producer_linger_ms=10,  # dead letters and other single sends travel together
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        stream_buffer_maxsize=STREAM_BUFFER,
        PartitionAssignor=PartitionAssignor,
        TableManager=TableManager,
    )
    app.transport = Transport(app.conf.broker_consumer, app)  # before anything asks for it
    feedback = app.topic(FEEDBACK.name, key_type=bytes, value_type=bytes, value_serializer="raw")
    dead_letters = app.topic(DEAD_LETTER.name, key_type=bytes, value_type=bytes, value_serializer="raw")
    speed = SpeedLayer(FileRegistry(settings.registry))
    arms = app.Table("arm-stats", default=dict, partitions=FEEDBACK.partitions)
    users = app.Table("user-state", default=dict, partitions=FEEDBACK.partitions)
    aggregator = Aggregator(arms=arms, users=users, speed=speed, dead_letters=dead_letters)

    @app.agent(feedback, name="aggregate-feedback")
    async def aggregate(stream: faust.StreamT[bytes]) -> None:
        manual = stream.noack()  # type: ignore[attr-defined]  # on Stream, not in StreamT
        aggregator.stream = manual
        async for event in manual.events():
            await aggregator.add(event)

    @app.timer(FLUSH_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def flush_feedback() -> None:
        await aggregator.flush()

    @app.task  # type: ignore[untyped-decorator]
    async def load_production() -> None:
        await asyncio.get_running_loop().run_in_executor(None, speed.refresh)

    @app.timer(settings.model_check_s, on_leader=False)  # type: ignore[untyped-decorator]
    async def follow_production() -> None:
        await asyncio.get_running_loop().run_in_executor(None, speed.refresh)

    trigger = RetrainTrigger(
        FileRegistry(settings.registry),
        settings.kafka_bootstrap,
        Thresholds(min_events=settings.retrain_min_events, max_age_s=settings.retrain_max_age_s),
    )

    @app.timer(max(settings.retrain_check_s, 1.0), on_leader=True)  # type: ignore[untyped-decorator]
    async def retrain_trigger() -> None:
        if settings.retrain_check_s <= 0:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(None, trigger.check)
        except Exception as exc:  # the broker or registry may be away; try again next tick
            log.warning("retrain trigger: %s", exc)
            trigger.close()

    @app.page("/stats/")
    async def stats(web: View, request: Request) -> Response:
        """Counters per ``version|variant``, summed over partitions."""
        return web.json(arm_totals(dict(arms.items())))

    @app.page("/users/{user_id}/")
    async def user(web: View, request: Request, user_id: str) -> Response:
        return web.json(users.get(user_id) or {})

    app.conf.recsys_tables = {"arms": arms, "users": users}  # for tests and tools
    return app


def arm_totals(entries: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``version|variant|partition`` entries summed per ``version|variant``."""
    grouped: dict[str, list[dict[str, int]]] = {}
    for key, value in entries.items():
        grouped.setdefault(key.rsplit("|", 1)[0], []).append(value)
    return {arm: total(parts) for arm, parts in sorted(grouped.items())}
