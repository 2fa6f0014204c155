"""Everything of the stream worker that reaches below faust-streaming's public API.

faust-streaming is pinned exactly (``FAUST_VERSION``); ``tests/unit/test_faust_internals.py``
holds each piece below to the installed faust: the copied consumer loop against faust's own
source, the store access and the transactional producers against a real RocksDB store and
a real app. A new faust version means re-reading this module against it.

- :class:`Consumer` and :class:`Transport`: faust's aiokafka consumer, delivering each
  fetched message without a task when it can (its loop is a copy of faust's, with one line
  changed), and answering recovery's question "how far does this changelog go?" from the
  broker. Under exactly-once faust answers it with the last stable offset the consumer saw
  in a fetch response, which a partition assigned a moment ago does not have yet: its
  highwater then reads -1, and recovery declares a table restored without reading it. On a
  busy machine a rebalance lost that race, and the worker counted on a partial table.
  The broker's last stable offset is asked for once the log's transactions have completed:
  right after a commit, before its markers are written, it still stops before the
  committed transaction, whose events would then be neither restored nor delivered again.
  It also commits for real when partitions are revoked: faust's commit at a rebalance
  returns without committing when its periodic commit is under way, and what was
  acknowledged after that one began stayed in a transaction open across the rebalance.
  Recovery then re-read the changelog of every partition the worker kept, up to the last
  stable offset, that is up to that open transaction, over newer values in the store; the
  worker went on counting from the older values, and its next commit wrote them.
  Should a partition still be kept with writes in an open transaction (seen on a loaded
  machine, cause not yet known), the store commits that transaction before faust restores:
  the restore then reads those writes too, and the events they came from, delivered again
  from the committed offsets, are recognised by their ids and skipped (a partition's
  writes of one flush always commit together, :mod:`streams.bulk`). Should that commit
  fail, the worker stops, and its restart restores what was committed.
- :class:`PartitionAssignor`: faust's, asking for fresh metadata when the group leader's
  lacks subscribed topics (read while the broker restarted), instead of assigning nothing.
- :class:`Recovery` (through :class:`TableManager`): faust's table recovery, whose loop is
  started again when a request it awaits is cancelled from below; faust's loop ended there,
  and the worker stayed paused with every partition assigned, counting nothing. The one
  source of such a cancellation seen (aiokafka's stop of a consumer without a group,
  :func:`stop_reader`) is also kept out of the recovery's reads.
- :meth:`Consumer.on_partitions_revoked`: what was acknowledged is committed before faust's
  revocation forgets it (faust drops the acknowledged offsets of revoked partitions first,
  and its own commit at a rebalance then covers none of them).
- :class:`RocksDBStore` and :class:`MemoryStore`: faust's table stores, except that every
  partition newly assigned to the worker is emptied before faust restores it from its
  changelog. faust writes a table's local store when a value is set, not when the
  transaction that carries its changelog record commits; a worker killed (or fenced) with
  a transaction open kept values that the changelog never got, such as the ids of events
  whose counts were lost with the transaction, and the replayed events were then skipped
  as already counted. (faust's own persisted-offset bookkeeping for exactly-once never
  fires either: it files the offsets under the changelog partition and looks them up under
  the source partition on commit, so a restart re-read changelogs over whatever the store
  held.) The local store therefore only ever holds what the changelog holds.
- :func:`partition_store`, :func:`index_key`, :func:`transaction_producer`: direct access
  to a partition's store and to the transactional producer of a source partition, for the
  bulk writes of :mod:`streams.bulk`.

Portions (``Consumer._drain_messages``) are copied from faust-streaming 0.15.3
(https://github.com/faust-streaming/faust), under this licence:

    Copyright (c) 2017-2020, Robinhood Markets, Inc.
    All rights reserved.

    Redistribution and use in source and binary forms, with or without
    modification, are permitted provided that the following conditions are met:
        * Redistributions of source code must retain the above copyright
          notice, this list of conditions and the following disclaimer.
        * Redistributions in binary form must reproduce the above copyright
          notice, this list of conditions and the following disclaimer in the
          documentation and/or other materials provided with the distribution.
        * Neither the name of Robinhood Markets, Inc. nor the
          names of its contributors may be used to endorse or promote products
          derived from this software without specific prior written permission.

    THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
    AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO,
    THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR
    PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL Robinhood Markets, Inc. OR CONTRIBUTORS
    BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR
    CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF
    SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS
    INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN
    CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE)
    ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE
    POSSIBILITY OF SUCH DAMAGE.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Set
from typing import Any, cast

from aiokafka import AIOKafkaConsumer
from faust.assignor import PartitionAssignor as FaustPartitionAssignor
from faust.stores import memory, rocksdb
from faust.tables import TableManager as FaustTableManager
from faust.tables.recovery import Recovery as FaustRecovery
from faust.transport.consumer import CONSUMER_FETCHING, TopicPartitionGroup, TransactionManager
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, CollectionT, Message
from mode import Service, ServiceT

from streams.suspension import run_until_suspended

log = logging.getLogger(__name__)

FAUST_VERSION = "0.15.3"
UPSTREAM_DRAIN_MESSAGES_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"
"""sha256 of the source of ``faust.transport.consumer.Consumer._drain_messages`` in
``FAUST_VERSION``, which :meth:`Consumer._drain_messages` copies."""
UPSTREAM_COMMIT_AND_END_SHA256 = "892377824b11a2ee5c19d59363236844e4b7f8fe39120da6f59fc784f973be7c"
"""sha256 of the source of faust's ``Consumer.commit_and_end_transactions`` in
``FAUST_VERSION``, which :meth:`Consumer.commit_and_end_transactions` replaces."""
UPSTREAM_HIGHWATERS_SHA256 = "a7f4f97d9f32aca2777713e22671d70eae4b3ae51541bb09a90448ce83acefce"
"""sha256 of the source of faust's ``AIOKafkaConsumerThread._highwaters`` in ``FAUST_VERSION``,
which :meth:`Consumer.highwaters` replaces."""
SETTLE_TIMEOUT_S = 30.0
"""How long a restore waits for the transactions in a changelog to complete (the markers of
a committed one come within milliseconds; an abandoned open one is aborted by the
coordinator when the partition's new producer starts)."""
SETTLE_POLL_S = 0.02
RECOVERY_RETRY_S = 0.5
"""The pause before table recovery starts again after a cancellation from below."""
STORES = {"rocksdb": "recsys-rocksdb", "memory": "recsys-memory"}
"""The worker's table stores (``faust.stores`` entry points of this package) by faust's names."""


class Consumer(driver.Consumer):
    """faust's aiokafka consumer, delivering each message without a task when it can.

    For every fetched message, faust's loop runs the delivery callback through
    ``Service.wait_first``: a task for the callback and more for the events that can
    interrupt it, then ``asyncio.wait`` on them; at thousands of messages a second that was
    about a sixth of the worker's time. Here the callback runs directly up to its first
    suspension; when it has to wait (flow stopped, a full buffer), the rest of it runs under
    ``wait_first`` exactly as in faust, so a rebalance still interrupts it.
    """

    async def commit_and_end_transactions(self) -> None:
        """Commit every acknowledged offset and end the transactions, as faust does before
        partitions are revoked; a commit already under way is waited out first (faust's
        returns without committing then)."""
        while await self.maybe_wait_for_commit_to_finish():
            pass  # the commit waited for began before the last acknowledgements: commit again
        await self.commit(start_new_transaction=False)  # no suspension since the check above

    async def on_partitions_revoked(self, revoked: Set[TP]) -> None:
        """Commit every acknowledged offset, then faust's revocation.

        faust forgets the acknowledged and committed offsets of the revoked partitions (under
        the eager protocol, all of them) at the start of its revocation, before it waits for
        the events in flight and commits: that commit then covers nothing acknowledged
        before the rebalance, and what is acknowledged during it is committed without
        faust's check against the committed offset. Committing first leaves only the events
        still in flight to that commit, and they follow the committed offset directly.
        """
        if not self.app.should_stop and self.assignment():
            while await self.maybe_wait_for_commit_to_finish():
                pass  # faust's commit returns without committing while another runs
            await self.commit()
        await super().on_partitions_revoked(revoked)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """The end offsets of ``partitions`` as the broker has them now: the last stable
        offsets under exactly-once (the consumer reads committed data only), once every
        transaction already in the log has completed (:func:`settled_end_offsets`)."""
        thread = self._thread
        transport = cast(driver.Transport, thread.transport)
        servers = driver.server_list(transport.url, transport.default_port)
        found = await thread.call_thread(
            settled_end_offsets, thread._ensure_consumer(), servers, set(partitions)
        )
        return cast(Mapping[TP, int], found)

    async def _deliver(self, callback: Callable[[Message], Awaitable[None]], message: Message) -> None:
        rest = run_until_suspended(callback(message))
        if rest is not None:  # it waits: a rebalance (flow suspended) or a stop may interrupt it
            await self.wait_first(rest, self.suspend_flow.wait())

    # faust-streaming 0.15.3's loop; the one change is marked.
    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover
        # This is the background thread started by Fetcher, used to
        # constantly read messages using Consumer.getmany.
        # It takes Fetcher as argument, because we must be able to
        # stop it using `await Fetcher.stop()`.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator, getmany(timeout=1.0))  # type: ignore[type-arg]

                # Sleeping because sometimes getmany is called in a loop
                # never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:  # noqa: SIM102  # as faust's
                                if self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                            await self._deliver(callback, message)  # changed: faust's wait_first
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


async def end_offsets(consumer: AIOKafkaConsumer, partitions: Set[TP]) -> dict[TP, int]:
    """Ask the broker for the end of each of ``partitions``: with ``read_committed`` the
    offset up to which every transaction has completed, the last one readable."""
    return cast(dict[TP, int], await consumer.end_offsets(list(partitions)))


async def log_end_offsets(servers: list[str], partitions: Set[TP]) -> dict[TP, int]:
    """The log end of each of ``partitions``, transactions open or not (``read_uncommitted``)."""
    reader = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await reader.start()
    try:
        return cast(dict[TP, int], await reader.end_offsets(list(partitions)))
    finally:
        await stop_reader(reader)


async def stop_reader(reader: AIOKafkaConsumer) -> None:
    """Stop a consumer without a group, keeping the cancellation its stop may raise.

    aiokafka's consumer without a group cancels a task of its own on stop and then awaits
    it; a task cancelled before it first ran raises ``CancelledError`` into the caller. A
    reader stopped right after a quick answer hit this on a loaded machine, and the error
    ended faust's table recovery. A cancellation of the caller's own task still propagates.
    """
    try:
        await reader.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("the reader's own task was cancelled on stop", exc_info=True)


async def settled_end_offsets(
    consumer: AIOKafkaConsumer,
    servers: list[str],
    partitions: Set[TP],
    *,
    timeout_s: float = SETTLE_TIMEOUT_S,
) -> dict[TP, int]:
    """The last stable offsets of ``partitions`` once they reach the log's end as it was when
    asked, waiting up to ``timeout_s``.

    A commit returns as soon as the transaction coordinator has decided it; the markers
    that make its records readable are written to the partitions after that. Until then the
    last stable offset stays before a transaction whose consumer offsets already count as
    committed: a restore that stopped there would miss that transaction's table writes,
    and its events would never be delivered again. So the end of the log is read first, and
    the last stable offset is asked again until it has passed it. A transaction still open
    when the wait ends (a fenced producer's, before the coordinator aborts it) is left out,
    with a warning.
    """
    target = await log_end_offsets(servers, partitions)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        stable = await end_offsets(consumer, partitions)
        behind = {tp: (stable[tp], target[tp]) for tp in partitions if stable[tp] < target[tp]}
        if not behind:
            return stable
        if asyncio.get_running_loop().time() >= deadline:
            log.warning("restoring up to the last stable offset, a transaction still open: %r", behind)
            return stable
        await asyncio.sleep(SETTLE_POLL_S)


class PartitionAssignor(FaustPartitionAssignor):
    """faust's assignor, asking for fresh metadata when subscribed topics are missing from it.

    The group leader assigns from its consumer's cluster metadata. Read while the broker was
    restarting, that metadata can lack every topic (their partitions had no leader yet); faust
    then assigns no partition at all, logging ``Ignoring missing topic``, and the metadata
    is not asked for again for minutes, so the group stays without partitions. Here the
    leader forces a metadata update at once: when it arrives with the topics, the group
    rebalances again (the leader rejoins when its metadata changes) and assigns them.
    """

    def assign(self, cluster: Any, member_metadata: MutableMapping[str, Any]) -> Any:
        """faust's assignment, after asking for metadata if a subscribed topic is missing."""
        subscribed = {topic for member in member_metadata.values() for topic in member.subscription}
        missing = sorted(topic for topic in subscribed if not cluster.partitions_for_topic(topic))
        if missing:
            log.warning("topics missing from the metadata, asking for it again: %s", ", ".join(missing))
            consumer = cast(Consumer, self.app.consumer)
            consumer._thread._ensure_consumer()._client.force_metadata_update()
        return super().assign(cluster, member_metadata)


class Recovery(FaustRecovery):
    """faust's table recovery, whose loop outlives a cancellation that was not meant for it.

    faust restores tables in one long-running task that waits for each rebalance. A request
    it awaits can end in ``CancelledError`` when the client cancels it (seen while the
    broker restarted and the group rebalanced twice within milliseconds); the error ends
    faust's task, no later rebalance is recovered, and the worker stays paused for good,
    its partitions assigned and nothing counted. Here the loop starts again and recovers
    the current assignment once more; only the stop of the worker, or a cancellation of
    this task itself, ends it.
    """

    @Service.task
    async def _restart_recovery(self) -> None:
        """Run faust's recovery loop; start it again after a stray cancellation."""
        loop = cast(Any, FaustRecovery._restart_recovery).fun
        while not self.should_stop:
            try:
                await loop(self)
                return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self.should_stop or (task is not None and task.cancelling()):
                    raise
                log.warning("table recovery was cancelled from below; recovering again", exc_info=True)
                await asyncio.sleep(RECOVERY_RETRY_S)
                self.signal_recovery_start.set()


class TableManager(FaustTableManager):
    """faust's table manager, with :class:`Recovery`."""

    @property
    def recovery(self) -> FaustRecovery:
        """The recovery service of the tables (one per manager)."""
        if self._recovery is None:
            self._recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class Transport(driver.Transport):
    """faust's aiokafka transport with :class:`Consumer`."""

    Consumer = Consumer


def _kept(table: CollectionT, assigned: Set[TP], newly_assigned: Set[TP], standbys: Set[TP]) -> set[int]:
    """The partitions of ``table``'s changelog that stay active here through this rebalance."""
    return _restored(table, set(assigned) - set(newly_assigned), standbys)


def _open_transaction(app: Any, topic: str, partition: int) -> tuple[Any, asyncio.Lock] | None:
    """The transactional producer (and its lock) committing ``topic``'s ``partition`` (a source
    or changelog partition), when its transaction is open with records or offsets in it."""
    try:
        transactional_id = _transactional_id(app, topic, partition)
    except KeyError:  # not in the group's assignment
        return None
    producer = app.producer._transaction_producers.get(transactional_id)
    manager = getattr(producer, "_txn_manager", None)
    if manager is None or (manager.is_empty_transaction() and not manager.partitions_to_add()):
        return None
    return producer, app.producer._trn_locks[transactional_id]


async def commit_writes_across_rebalance(
    table: CollectionT, assigned: Set[TP], newly_assigned: Set[TP], standbys: Set[TP]
) -> None:
    """Commit (and begin anew) the open transaction of each partition of ``table`` kept
    through this rebalance that has writes in it, so that faust's restore reads them."""
    topic = table.changelog_topic.get_topic_name()
    for partition in sorted(_kept(table, assigned, newly_assigned, standbys)):
        found = _open_transaction(table.app, topic, partition)
        if found is None:
            continue
        producer, lock = found
        log.warning(
            "%s: partition %d is kept with writes in an open transaction: committed", table.name, partition
        )
        async with lock:
            await producer.commit_transaction()
            await producer.begin_transaction()


def _restored(table: CollectionT, tps: Set[TP], standbys: Set[TP]) -> set[int]:
    """The partitions of ``table``'s changelog among ``tps`` that become active here."""
    return {tp.partition for tp in tps if tp.topic in table.changelog_topic.topics and tp not in standbys}


class RocksDBStore(rocksdb.Store):
    """faust's RocksDB store; a partition newly assigned as active starts empty, so that
    faust restores it from the whole of its changelog."""

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        standbys = self.app.assignor.assigned_standbys()
        await commit_writes_across_rebalance(self.table, assigned, newly_assigned, standbys)
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def assign_partitions(self, table: CollectionT, tps: set[TP], generation_id: int = 0) -> None:
        for partition in sorted(_restored(table, tps, self.app.assignor.assigned_standbys())):
            self.empty_partition(partition)
        await super().assign_partitions(table, tps, generation_id)

    def empty_partition(self, partition: int) -> None:
        """Remove ``partition``'s local database (and its persisted offset), as faust's
        ``reset_state`` does for the whole table."""
        self._dbs.pop(partition, None)
        self._key_index.clear()
        gc.collect()  # faust closes a database by dropping it
        path = self.partition_path(partition)
        if path.exists():
            log.info("%s: partition %d is restored from its changelog", self.table_name, partition)
            shutil.rmtree(path)


class MemoryStore(memory.Store):  # type: ignore[type-arg]
    """faust's in-memory store; a partition newly assigned as active starts empty."""

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        standbys = self.app.assignor.assigned_standbys()
        await commit_writes_across_rebalance(self.table, assigned, newly_assigned, standbys)
        partitions = _restored(self.table, newly_assigned, standbys)
        for key in [key for key, partition in self._key_partition.items() if partition in partitions]:
            self.data.pop(key, None)
            del self._key_partition[key]
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)


def store_url(url: str) -> str:
    """faust's store URL ``url`` (``rocksdb://``, ``memory://``) for this module's store."""
    scheme, sep, rest = url.partition("://")
    return f"{STORES.get(scheme, scheme)}{sep}{rest}"


def partition_store(store: Any, partition: int) -> Any:
    """The RocksDB database of ``partition`` in ``store`` (opened on first use)."""
    return store._db_for_partition(partition)


def index_key(store: Any, key: bytes, partition: int) -> None:
    """Record that ``key`` lives in ``partition``, as faust's own writes do (reads look there first)."""
    store._key_index[key] = partition


def memory_put(store: Any, key: Any, value: Any, partition: int) -> None:
    """Set ``key`` in an in-memory ``store``, remembering its partition as faust's recovery does."""
    store.data[key] = value
    store._key_partition[key] = partition


def transaction_producer(app: Any, source_topic: str, partition: int) -> tuple[Any, asyncio.Lock]:
    """The transactional producer that commits ``source_topic``'s ``partition`` (its consumer
    offsets and what was written for it), and the lock faust holds while committing it."""
    transactional_id = _transactional_id(app, source_topic, partition)
    producer = app.producer
    return producer._transaction_producers[transactional_id], producer._trn_locks[transactional_id]


def _transactional_id(app: Any, topic: str, partition: int) -> str:
    """The id of the transaction that commits ``topic``'s ``partition``, as faust's consumer
    names it (``KeyError`` for a topic outside the group's assignment)."""
    group = TopicPartitionGroup(topic, partition, app.assignor.group_for_topic(topic))
    return str(TransactionManager.transactional_id_format.format(group_id=app.conf.id, tpg=group))
