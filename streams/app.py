"""The stream processors (faust-streaming): feedback aggregation, with exactly-once processing.

``recsys stream worker`` (or ``faust -A streams.app worker``) runs them. The ``feedback``
topic is keyed by user, so everything about one user, including redeliveries of one
event, lands in one partition; every table below is keyed so that its entries live with
that partition's state, which Kafka transactions then commit together with the consumer
offsets (``processing_guarantee="exactly_once"``). A worker killed at any point restarts
from its changelogs and counts each event exactly once.

Tables:

- ``seen-events``: event ids already counted (idempotency).
- ``arm-stats``: per ``version|variant|partition``, the counters of :mod:`recsys.aggregates`.
- ``arm-users``: whether a user has been counted in an arm.
- ``user-state``: per user, loved and hated tracks and recent plays.

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

from recsys.aggregates import add_to_arm, apply_to_user, arm_of, total
from recsys.errors import InvalidRequest
from recsys.events import DeadLetter, FeedbackEvent
from recsys.feedback import FeedbackType
from recsys.registry import FileRegistry
from recsys.retraining import Thresholds
from recsys.topics import DEAD_LETTER, FEEDBACK, USER_UPDATES
from streams.retrain import RetrainTrigger
from streams.settings import StreamSettings
from streams.speed import SpeedLayer

log = logging.getLogger(__name__)
SPEED_LAYER_EVENTS = frozenset(
    {FeedbackType.LOVE, FeedbackType.HATE, FeedbackType.UNLOVE, FeedbackType.UNHATE, FeedbackType.COMPLETE}
)


def create_app(settings: StreamSettings | None = None) -> faust.App:
    """The faust application with its topics, tables, agents and web views."""
    settings = settings or StreamSettings()
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=settings.store,
        datadir=str(settings.data_dir),
        processing_guarantee="exactly_once",
        topic_partitions=FEEDBACK.partitions,
        topic_replication_factor=1,
        web_bind="127.0.0.1",
        web_port=settings.web_port,
        web_host="127.0.0.1",
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=10,  # changelog and update messages go out in batches, not one by one
    )
    feedback = app.topic(FEEDBACK.name, key_type=bytes, value_type=bytes, value_serializer="raw")
    dead_letters = app.topic(DEAD_LETTER.name, key_type=bytes, value_type=bytes, value_serializer="raw")
    user_updates = app.topic(USER_UPDATES.name, key_type=bytes, value_type=bytes, value_serializer="raw")
    speed = SpeedLayer(FileRegistry(settings.registry))
    seen = app.Table("seen-events", default=bool, partitions=FEEDBACK.partitions)
    arms = app.Table("arm-stats", default=dict, partitions=FEEDBACK.partitions)
    arm_users = app.Table("arm-users", default=bool, partitions=FEEDBACK.partitions)
    users = app.Table("user-state", default=dict, partitions=FEEDBACK.partitions)

    @app.agent(feedback, name="aggregate-feedback")
    async def aggregate(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                parsed = FeedbackEvent.from_bytes(message.value)
            except InvalidRequest as exc:
                letter = DeadLetter(
                    source_topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    reason=exc.message,
                    payload=message.value.decode("utf-8", errors="replace")[:10_000],
                )
                await dead_letters.send(key=message.topic.encode(), value=letter.to_bytes())
                continue
            event_id = str(parsed.event_id)
            if seen[event_id]:
                continue
            seen[event_id] = True
            arm = arm_of(parsed)
            member = f"{arm}|{parsed.user_id}"
            new_user = not arm_users[member]
            if new_user:
                arm_users[member] = True
            key = f"{arm}|{message.partition}"
            arms[key] = add_to_arm(arms[key], parsed, new_user=new_user)
            state = apply_to_user(users[parsed.user_id], parsed)
            users[parsed.user_id] = state
            if parsed.type in SPEED_LAYER_EVENTS:
                update = speed.update_for(
                    parsed.user_id, state, cause_event_id=parsed.event_id, cause_ts=parsed.ts
                )
                await user_updates.send(key=parsed.user_id.encode(), value=update.to_bytes())

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

    app.conf.recsys_tables = {"arms": arms, "users": users, "seen": seen}  # for tests and tools
    return app


def arm_totals(entries: dict[str, Any]) -> dict[str, dict[str, int]]:
    """``version|variant|partition`` entries summed per ``version|variant``."""
    grouped: dict[str, list[dict[str, int]]] = {}
    for key, value in entries.items():
        grouped.setdefault(key.rsplit("|", 1)[0], []).append(value)
    return {arm: total(parts) for arm, parts in sorted(grouped.items())}
