"""Feedback folded into the tables in batches, acknowledged only once written.

Writing a faust table costs a changelog message inside the Kafka transaction; doing it
per event for every table bounded the worker at about a thousand events a second. Here
the agent only parses and queues each event; a flush (every ``FLUSH_EVENTS`` events,
and on a short timer for the tail of a burst) applies the whole queue:

- per user, one read and one write of ``user-state``, which also holds the ids of the
  user's last ``DEDUP_WINDOW`` events (a redelivered event is recognised and skipped)
  and the user's totals in each arm (``by_arm``; which arms count them as a user, and
  what moves the arms' sums of squares);
- per ``arm|partition``, one write of ``arm-stats``; the arms of an interleaving experiment
  (``version|NAME:interleave``) also keep the users' preferences, from the listening
  credited to the version that contributed each track;
- per listener whose love, hate or complete changed their state, one speed-layer update.

The writes of a flush go out as one record batch per topic partition
(:mod:`streams.bulk`). Events are acknowledged after their writes are handed to the
producer, so a commit never covers an event whose writes are not in the same
transaction: a worker killed at any point replays the unacknowledged events onto the
last committed tables.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from faust.types import EventT, TopicT

from recsys.errors import InvalidRequest
from recsys.events.schemas import DeadLetter, FeedbackEvent, UserUpdate
from recsys.events.topics import USER_UPDATES
from recsys.events.weights import FeedbackType
from recsys.experiments.aggregates import (
    UNATTRIBUTED,
    add_credits,
    add_to_arm,
    add_to_user,
    apply_to_user,
    arms_of,
    credit_changes,
    credited_listening,
    credits_of,
    is_interleaved,
)
from streams.bulk import BulkSender, TableEntries, key_partition
from streams.speed import SpeedLayer

log = logging.getLogger(__name__)
FLUSH_EVENTS = 2000
FLUSH_INTERVAL_S = 0.05
DEDUP_WINDOW = 128
"""Event ids remembered per user: a client's retry of any of its last 128 events is
recognised (Kafka's own redeliveries are covered by the transactions)."""
ID_CHARS = 16
"""Leading hex digits of an event id kept for that (64 bits: no collision among 128)."""
SPEED_LAYER_EVENTS = frozenset(
    {FeedbackType.LOVE, FeedbackType.HATE, FeedbackType.UNLOVE, FeedbackType.UNHATE, FeedbackType.COMPLETE}
)


class Aggregator:
    """Queues events of the feedback stream and applies them to the tables in batches.

    Parameters
    ----------
    arms, users : faust.Table
        ``arm-stats`` (key ``version|variant|partition``) and ``user-state`` (key user).
    speed : SpeedLayer
        Computes listeners' fresh vectors.
    dead_letters : faust.Topic
        Where invalid events go (speed-layer updates go to ``user-updates``).
    """

    def __init__(
        self,
        *,
        arms: Any,
        users: Any,
        speed: SpeedLayer,
        dead_letters: TopicT,
    ) -> None:
        self.arms, self.users, self.speed = TableEntries(arms), TableEntries(users), speed
        self.dead_letters = dead_letters
        self.sender: BulkSender | None = None
        self.pending: list[EventT[bytes]] = []
        self.stream: Any = None
        """The agent's stream, with manual acknowledgements (``Stream.noack()``)."""
        self.duplicates = 0
        self._lock = asyncio.Lock()

    async def add(self, event: EventT[bytes]) -> None:
        self.pending.append(event)
        if len(self.pending) >= FLUSH_EVENTS:
            await self.flush()

    async def flush(self) -> None:
        """Apply every queued event, then acknowledge them."""
        async with self._lock:
            if not self.pending or self.stream is None:
                return
            events, self.pending = self.pending, []
            app = self.stream.app
            source = events[0].message.topic
            if self.sender is None:
                self.sender = BulkSender(app, source)
            owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == source}
            by_partition: dict[int, list[EventT[bytes]]] = defaultdict(list)
            for event in events:
                by_partition[event.message.partition].append(event)
            changed: list[tuple[int, str, dict[str, Any], FeedbackEvent]] = []
            for partition, group in by_partition.items():
                if partition in owned:  # else revoked meanwhile: its new owner reads them again
                    changed += self._apply(partition, group, self.sender)
            if changed:  # one batched fold-in for the listeners of every partition
                # (inline: in a thread, contention for the GIL made the worker slower)
                updates = self.speed.updates_for([change[1:] for change in changed])
                self._send_updates([change[0] for change in changed], updates, self.sender)
            await self.sender.send()
            await app.producer.buffer.flush()  # dead letters
            for event in events:
                if event.message.partition in owned:
                    await self.stream.ack(event)

    def _apply(
        self, partition: int, events: list[EventT[bytes]], sender: BulkSender
    ) -> list[tuple[int, str, dict[str, Any], FeedbackEvent]]:
        """Fold ``partition``'s events into its tables; return the listeners whose love, hate
        or complete calls for a speed-layer update, with their new state."""
        states: dict[str, dict[str, Any]] = {}
        counters: dict[str, dict[str, float]] = {}
        causes: dict[str, FeedbackEvent] = {}
        for event in events:
            parsed = self._parse(event)
            if parsed is None:
                continue
            user = parsed.user_id
            if user not in states:
                states[user] = self.users.get(partition, user)
            state = states[user]
            seen = state.setdefault("ids", [])
            event_id = parsed.event_id.hex[:ID_CHARS]
            if event_id in seen:
                self.duplicates += 1
                continue
            seen.append(event_id)
            del seen[:-DEDUP_WINDOW]
            if is_interleaved(parsed.variant):
                self._credit(partition, parsed, state, counters)
            for arm in arms_of(parsed):
                self._count(arm, partition, parsed, state, counters)
            state.update(apply_to_user(state, parsed))
            if parsed.type in SPEED_LAYER_EVENTS:
                causes[user] = parsed
        for table, entries in ((self.users, states), (self.arms, counters)):
            sender.add(partition, table.topic, partition, table.put(partition, entries))
        return [(partition, user, states[user], cause) for user, cause in causes.items()]

    @staticmethod
    def _send_updates(sources: list[int], updates: list[UserUpdate], sender: BulkSender) -> None:
        """Queue each update in the transaction of the feedback partition that caused it."""
        grouped: dict[tuple[int, int], list[tuple[bytes, bytes]]] = defaultdict(list)
        for source, update in zip(sources, updates, strict=True):
            key = update.user_id.encode()
            grouped[(source, key_partition(key, USER_UPDATES.partitions))].append((key, update.to_bytes()))
        for (source, target), records in grouped.items():
            sender.add(source, USER_UPDATES.name, target, records)

    def _count(
        self,
        arm: str,
        partition: int,
        event: FeedbackEvent,
        state: dict[str, Any],
        counters: dict[str, dict[str, float]],
    ) -> None:
        """One event into one arm's (or slice's) counters and the user's totals in it."""
        counted = state.setdefault("arms", [])
        new_user = arm not in counted
        if new_user:
            counted.append(arm)
        key = f"{arm}|{partition}"
        if key not in counters:
            counters[key] = self.arms.get(partition, key)
        by_arm = state.setdefault("by_arm", {})
        before = by_arm.get(arm, {})
        after = by_arm[arm] = add_to_user(before, event)
        counters[key] = add_to_arm(
            counters[key], event, new_user=new_user, user_before=before, user_after=after
        ) | credits_of(counters[key])

    def _credit(
        self,
        partition: int,
        event: FeedbackEvent,
        state: dict[str, Any],
        counters: dict[str, dict[str, float]],
    ) -> None:
        """An interleaved list's listening, credited to the version that contributed the track:
        the user's preference in the experiment's arms
        (:data:`~recsys.experiments.aggregates.CREDIT_COUNTERS`),
        from their totals before the event is counted."""
        variant = event.variant or ""
        before = credited_listening(state.get("by_arm", {}), variant)
        changes = credit_changes(before, event.model_version or UNATTRIBUTED, event.listen_ms or 0)
        for version, change in changes.items():
            key = f"{version}|{variant}|{partition}"
            if key not in counters:
                counters[key] = self.arms.get(partition, key)
            counters[key] = add_credits(counters[key], change)

    def _parse(self, event: EventT[bytes]) -> FeedbackEvent | None:
        message = event.message
        try:
            return FeedbackEvent.from_bytes(message.value or b"")
        except InvalidRequest as exc:
            letter = DeadLetter(
                source_topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                reason=exc.message,
                payload=(message.value or b"").decode("utf-8", errors="replace")[:10_000],
            )
            self.dead_letters.send_soon(key=message.topic.encode(), value=letter.to_bytes())
            return None
