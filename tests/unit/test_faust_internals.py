"""The worker's reach below faust's public API, held to the installed faust-streaming: the
copied consumer loop against faust's source, the stores and bulk writes against faust's
real RocksDB and memory stores, the transactional producers against faust's commit."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hashlib
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka.cluster import ClusterMetadata
from aiokafka.consumer.group_coordinator import NoGroupCoordinator
from aiokafka.consumer.subscription_state import SubscriptionState
from faust.tables.recovery import ServiceStopped
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP, Message
from yarl import URL

from streams import faust_internals
from streams.bulk import TableEntries
from streams.faust_internals import (
    FAUST_VERSION,
    UPSTREAM_COMMIT_AND_END_SHA256,
    UPSTREAM_DRAIN_MESSAGES_SHA256,
    UPSTREAM_HIGHWATERS_SHA256,
    Consumer,
    MemoryStore,
    RocksDBStore,
    Transport,
    transaction_producer,
)

PARTITIONS = 4


def source(function: Any) -> str:
    return textwrap.dedent(inspect.getsource(function))


def test_the_installed_faust_is_the_one_the_copy_was_made_from() -> None:
    """Fails on any change to faust's loop: then compare the copy with it and update the hash."""
    assert faust.__version__ == FAUST_VERSION
    upstream = inspect.getsource(FaustConsumer._drain_messages)
    assert hashlib.sha256(upstream.encode()).hexdigest() == UPSTREAM_DRAIN_MESSAGES_SHA256


def test_the_highwaters_replaced_are_fausts_cached_ones() -> None:
    """Fails when faust changes how recovery learns a changelog's end: then re-read it."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    upstream = inspect.getsource(AIOKafkaConsumerThread._highwaters)
    assert hashlib.sha256(upstream.encode()).hexdigest() == UPSTREAM_HIGHWATERS_SHA256
    assert "last_stable_offset" in upstream  # the cached value, None before a fetch


def test_recovery_asks_the_broker_for_each_changelogs_end_once_its_transactions_completed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last stable offset is asked again until it reaches the log end read first: right
    after a commit the markers are not written yet and the stable offset lags behind."""
    tps = {TP("changelog", 0), TP("changelog", 3)}
    asked: list[set[TP]] = []
    servers_seen: list[list[str]] = []

    async def log_end(servers: list[str], partitions: set[TP]) -> dict[TP, int]:
        servers_seen.append(servers)
        return {tp: 10 + tp.partition for tp in partitions}

    class Broker:
        async def end_offsets(self, partitions: list[TP]) -> dict[TP, int]:
            asked.append(set(partitions))
            lag = 2 if len(asked) < 3 else 0  # the markers land before the third question
            return {tp: 10 + tp.partition - lag for tp in partitions}

    async def call_thread(fun: Any, *args: Any) -> Any:
        return await fun(*args)

    monkeypatch.setattr(faust_internals, "log_end_offsets", log_end)
    monkeypatch.setattr(faust_internals, "SETTLE_POLL_S", 0.001)
    transport = SimpleNamespace(url=[URL("kafka://127.0.0.1:19092")], default_port=9092)
    thread = SimpleNamespace(call_thread=call_thread, _ensure_consumer=Broker, transport=transport)
    found = asyncio.run(Consumer.highwaters(SimpleNamespace(_thread=thread), *tps))  # type: ignore[arg-type]
    assert found == {TP("changelog", 0): 10, TP("changelog", 3): 13}
    assert asked == [tps, tps, tps]
    assert servers_seen == [["127.0.0.1:19092"]]


def test_a_transaction_left_open_is_waited_for_only_until_the_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tp = TP("changelog", 1)

    async def log_end(servers: list[str], partitions: set[TP]) -> dict[TP, int]:
        return {tp: 20}

    class Broker:
        async def end_offsets(self, partitions: list[TP]) -> dict[TP, int]:
            return {tp: 15}

    monkeypatch.setattr(faust_internals, "log_end_offsets", log_end)
    monkeypatch.setattr(faust_internals, "SETTLE_POLL_S", 0.001)
    run = faust_internals.settled_end_offsets(Broker(), ["x:1"], {tp}, timeout_s=0.05)  # type: ignore[arg-type]
    assert asyncio.run(run) == {tp: 15}
    assert "a transaction still open" in caplog.text


def test_the_copied_loop_is_fausts_but_for_the_delivery() -> None:
    upstream = ast.unparse(ast.parse(source(FaustConsumer._drain_messages)))
    delivery = "await self.wait_first(callback(message), self.suspend_flow.wait())"
    assert upstream.count(delivery) == 1
    ours = ast.unparse(ast.parse(source(Consumer._drain_messages)))
    assert ours == upstream.replace(delivery, "await self._deliver(callback, message)")


def test_the_app_consumes_through_it_and_keeps_its_tables_in_these_stores(tmp_path: Path) -> None:
    from streams.app import create_app
    from streams.settings import StreamSettings

    for url, store in (("rocksdb://", RocksDBStore), ("memory://", MemoryStore)):
        app = create_app(StreamSettings(store=url, data_dir=tmp_path))
        assert isinstance(app.transport, Transport) and app.transport.Consumer is Consumer
        assert all(type(table.data) is store for table in app.conf.recsys_tables.values())


def table_in(tmp_path: Path, url: str) -> Any:
    app = faust.App(
        "contract",
        broker="kafka://127.0.0.1:1",  # never contacted
        store=faust_internals.store_url(url),
        datadir=str(tmp_path),
        processing_guarantee="exactly_once",
    )
    return app.Table("user-state", default=dict, partitions=PARTITIONS)


def changelog_event(table: Any, partition: int, offset: int, key: str, value: Any) -> Any:
    """A changelog record as faust's recovery hands it to the table: the raw message, and the
    key and value decoded by the changelog topic."""
    topic = table.changelog_topic.get_topic_name()
    raw_key, raw_value = json.dumps(key).encode(), json.dumps(value).encode()
    message = Message(topic, partition, offset, 0.0, 0, None, raw_key, raw_value, None)
    return SimpleNamespace(message=message, key=key, value=value)


def rebalance(table: Any, newly_assigned: set[int], assigned: set[int]) -> None:
    def tps(partitions: set[int]) -> set[TP]:
        return {TP(table.changelog_topic.get_topic_name(), p) for p in partitions}

    asyncio.run(table.data.on_rebalance(tps(assigned), set(), tps(newly_assigned)))


@pytest.mark.parametrize("url", ["rocksdb://", "memory://"])
def test_bulk_entries_are_what_fausts_store_reads_and_the_other_way_round(tmp_path: Path, url: str) -> None:
    table = table_in(tmp_path, url)
    entries = TableEntries(table)
    rebalance(table, {0, 1, 2, 3}, {0, 1, 2, 3})
    records = entries.put(2, {"u1": {"loved": ["tr1"]}, "u2": {}})
    assert records == [(b'"u1"', b'{"loved":["tr1"]}'), (b'"u2"', b"{}")]
    assert table.data["u1"] == {"loved": ["tr1"]} and table.data["u2"] == {}
    assert entries.get(2, "u1") == {"loved": ["tr1"]} and entries.get(2, "missing") == {}
    table.apply_changelog_batch([changelog_event(table, 3, 7, "u3", {"hated": ["tr9"]})])
    assert entries.get(3, "u3") == {"hated": ["tr9"]} and table.data["u3"] == {"hated": ["tr9"]}


@pytest.mark.parametrize("url", ["rocksdb://", "memory://"])
def test_a_newly_assigned_partition_starts_empty_and_one_kept_keeps_its_entries(
    tmp_path: Path, url: str
) -> None:
    """What a worker wrote for a transaction that never committed cannot outlive the assignment."""
    table = table_in(tmp_path, url)
    entries = TableEntries(table)
    rebalance(table, {0, 1, 2, 3}, {0, 1, 2, 3})
    for partition in range(PARTITIONS):
        entries.put(partition, {f"u{partition}": {"ids": ["aborted"]}})
    if url == "rocksdb://":
        tp = TP(table.changelog_topic.get_topic_name(), 1)
        table.data.set_persisted_offset(tp, 41)
    rebalance(table, {1, 3}, {0, 1, 2, 3})  # 1 and 3 come back (another worker had them)
    assert [entries.get(p, f"u{p}") for p in range(PARTITIONS)] == [{"ids": ["aborted"]}, {}] * 2
    assert "u1" not in table.data and "u0" in table.data
    if url == "rocksdb://":
        assert table.data.persisted_offset(tp) is None  # faust restores it from the beginning


def write_uncommitted(folder: str) -> None:
    """A worker's life: its partitions assigned, an entry written, then the process ends."""
    table = table_in(Path(folder), "rocksdb://")
    rebalance(table, {0, 1, 2, 3}, {0, 1, 2, 3})
    TableEntries(table).put(0, {"u0": {"ids": ["aborted"]}})


def test_a_worker_restarted_on_a_kept_folder_starts_from_empty_partitions(tmp_path: Path) -> None:
    life = f"from {__name__} import write_uncommitted; write_uncommitted({str(tmp_path)!r})"
    subprocess.run([sys.executable, "-c", life], check=True, cwd=Path(__file__).parents[2])
    again = table_in(tmp_path, "rocksdb://")
    assert TableEntries(again).get(0, "u0") == {"ids": ["aborted"]}  # what a killed worker left
    rebalance(again, {0, 1, 2, 3}, {0, 1, 2, 3})
    assert TableEntries(again).get(0, "u0") == {}


class _RecordingProducer:
    """aiokafka's transactional producer, reduced to the calls faust's commit makes."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self.lock, self.held = lock, []

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        self.held.append(self.lock.locked())

    async def commit_transaction(self) -> None:
        self.held.append(self.lock.locked())

    async def begin_transaction(self) -> None:
        self.held.append(self.lock.locked())


def test_fausts_commit_of_a_source_partition_holds_the_lock_bulk_writes_take() -> None:
    async def scenario() -> list[bool]:
        app = faust.App("contract", broker="kafka://127.0.0.1:1", processing_guarantee="exactly_once")
        app.assignor._topic_groups["feedback"] = 5  # as the group's assignment sets it
        tid = "contract-5-2"  # how faust's consumer names the transaction it commits
        lock = app.producer._trn_locks[tid] = asyncio.Lock()
        recording = app.producer._transaction_producers[tid] = _RecordingProducer(lock)
        producer, returned = transaction_producer(app, "feedback", 2)
        assert producer is recording and returned is lock
        await app.producer.commit_transactions({tid: {}}, "contract")
        return recording.held

    assert asyncio.run(scenario()) == [True, True, True]


def test_the_commit_before_a_rebalance_replaced_is_fausts() -> None:
    """Fails when faust changes its commit before partitions are revoked: then re-read it."""
    upstream = inspect.getsource(FaustConsumer.commit_and_end_transactions)
    assert hashlib.sha256(upstream.encode()).hexdigest() == UPSTREAM_COMMIT_AND_END_SHA256


async def commit_before_revoking(commit: Any, periodic_under_way: bool) -> list[bool]:
    """Run ``commit`` (a consumer's ``commit_and_end_transactions``) on a consumer of a real
    app, with or without a periodic commit under way that ends a moment later; return the
    ``start_new_transaction`` flag of each commit it made."""
    app = faust.App("revoking", broker="kafka://127.0.0.1:1", processing_guarantee="exactly_once")
    app.transport = Transport(app.conf.broker_consumer, app)
    consumer = app.consumer
    assert isinstance(consumer, Consumer)
    made: list[bool] = []

    async def force_commit(topics: Any = None, start_new_transaction: bool = True) -> bool:
        made.append(start_new_transaction)
        return True

    consumer.force_commit = force_commit  # type: ignore[method-assign]
    under_way: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if periodic_under_way:
        consumer._commit_fut = under_way
    task = asyncio.ensure_future(commit(consumer))
    for _ in range(3):
        await asyncio.sleep(0)
    if periodic_under_way:
        assert made == []  # nothing while the periodic commit runs
        consumer._commit_fut = None  # as faust's commit does when it ends
        under_way.set_result(None)
    await asyncio.wait_for(task, timeout=5)
    consumer._thread.thread_loop.close()  # never started: its loop is closed here
    return made


@pytest.mark.parametrize("periodic_under_way", [False, True])
def test_partitions_are_revoked_only_after_a_commit_of_everything_acknowledged(
    periodic_under_way: bool,
) -> None:
    ours = asyncio.run(commit_before_revoking(Consumer.commit_and_end_transactions, periodic_under_way))
    assert ours == [False]  # one commit, ending the transactions, after the periodic one
    upstream = FaustConsumer.commit_and_end_transactions
    fausts = asyncio.run(commit_before_revoking(upstream, periodic_under_way))
    assert fausts == ([] if periodic_under_way else [False])  # faust's skips it


class _KeptProducer:
    """A transactional producer as the stores see it: aiokafka's own transaction bookkeeping,
    and the commit and begin calls made on it (with whether its lock was held)."""

    def __init__(self, manager: Any, lock: asyncio.Lock) -> None:
        self._txn_manager, self.lock, self.calls = manager, lock, []

    async def commit_transaction(self) -> None:
        self.calls.append(("commit", self.lock.locked()))

    async def begin_transaction(self) -> None:
        self.calls.append(("begin", self.lock.locked()))


def with_transaction(table: Any, partition: int, writes: int) -> _KeptProducer:
    """Give ``table``'s app the transactional producer of ``partition``, in a transaction with
    ``writes`` partitions written to (aiokafka's own bookkeeping of a transaction)."""
    from aiokafka.producer.transaction_manager import TransactionManager, TransactionState
    from aiokafka.structs import TopicPartition

    app, topic = table.app, table.changelog_topic.get_topic_name()
    app.assignor._topic_groups[topic] = 1

    async def in_transaction() -> TransactionManager:  # aiokafka's manager makes futures
        manager = TransactionManager(f"{app.conf.id}-1-{partition}", 60_000)
        manager.set_pid_and_epoch(1, 0)
        manager.begin_transaction()
        for target in range(writes):
            manager.maybe_add_partition_to_txn(TopicPartition(f"out-{target}", partition))
        return manager

    manager = asyncio.run(in_transaction())
    assert manager.state is TransactionState.IN_TRANSACTION
    lock = app.producer._trn_locks[manager.transactional_id] = asyncio.Lock()
    producer = app.producer._transaction_producers[manager.transactional_id] = _KeptProducer(manager, lock)
    return producer


@pytest.mark.parametrize("url", ["rocksdb://", "memory://"])
@pytest.mark.parametrize(
    ("writes", "kept", "committed"), [(0, True, False), (1, True, True), (3, True, True), (2, False, False)]
)
def test_a_partition_kept_with_writes_in_an_open_transaction_commits_them_before_the_restore(
    tmp_path: Path, url: str, writes: int, kept: bool, committed: bool
) -> None:
    """Recovery reads a changelog up to its last stable offset: writes left in an open
    transaction would be read over by older values. A partition newly assigned is emptied
    anyway, and its old transaction is another worker's to abort."""
    table = table_in(tmp_path, url)
    rebalance(table, {0, 1, 2, 3}, {0, 1, 2, 3})
    producer = with_transaction(table, 2, writes)
    rebalance(table, set() if kept else {2}, {0, 1, 2, 3})
    assert producer.calls == ([("commit", True), ("begin", True)] if committed else [])


@pytest.mark.parametrize(
    ("known", "refreshed"), [({"feedback": {0, 1}, "changelog": {0}}, 0), ({"changelog": {0}}, 1), ({}, 1)]
)
def test_the_leader_asks_for_metadata_again_when_subscribed_topics_are_missing(
    monkeypatch: pytest.MonkeyPatch, known: dict[str, set[int]], refreshed: int
) -> None:
    """A leader whose metadata lacks topics (read while the broker restarted) would assign
    nothing and keep that metadata for minutes: it forces an update, which makes it rejoin."""
    from streams.app import create_app

    forced: list[bool] = []
    client = SimpleNamespace(force_metadata_update=lambda: forced.append(True))
    app = create_app()
    app._consumer = SimpleNamespace(
        _thread=SimpleNamespace(_ensure_consumer=lambda: SimpleNamespace(_client=client))
    )
    monkeypatch.setattr(faust_internals.FaustPartitionAssignor, "assign", lambda self, c, m: "faust's")
    cluster = SimpleNamespace(partitions_for_topic=lambda topic: known.get(topic))
    members = {
        "a": SimpleNamespace(subscription=["feedback", "changelog"]),
        "b": SimpleNamespace(subscription=["feedback"]),
    }
    assert isinstance(app.assignor, faust_internals.PartitionAssignor)
    assert app.assignor.assign(cluster, members) == "faust's"
    assert len(forced) == refreshed


async def acknowledged_at_commit_and_revocation(revoke: Any) -> tuple[list[dict[TP, list[int]]], list[Any]]:
    """Run ``revoke`` (a consumer's ``on_partitions_revoked``) on a consumer of a real app with
    offsets 5 to 7 of a partition acknowledged; return the acknowledged offsets each commit saw,
    and those faust's revocation callback (its wait for events in flight) saw."""
    app = faust.App("revoking", broker="kafka://127.0.0.1:1", processing_guarantee="exactly_once")
    app.transport = Transport(app.conf.broker_consumer, app)
    consumer = app.consumer
    assert isinstance(consumer, Consumer)
    tp = TP("feedback", 0)
    consumer._acked[tp] = [5, 6, 7]
    consumer._acked_index[tp] = {5, 6, 7}
    consumer._committed_offset[tp] = 5
    commits: list[dict[TP, list[int]]] = []
    callback: list[Any] = []

    async def commit(topics: Any = None, start_new_transaction: bool = True) -> bool:
        commits.append({k: list(v) for k, v in consumer._acked.items() if v})
        return True

    async def on_revoked(revoked: Any) -> None:
        callback.append({k: list(v) for k, v in consumer._acked.items() if v})

    consumer.commit = commit  # type: ignore[method-assign]
    consumer._on_partitions_revoked = on_revoked
    consumer.assignment = lambda: {tp}  # type: ignore[method-assign]
    await revoke(consumer, {tp})
    consumer._thread.thread_loop.close()  # never started: its loop is closed here
    return commits, callback


def test_what_was_acknowledged_is_committed_before_faust_forgets_it_at_a_revocation() -> None:
    tp = TP("feedback", 0)
    commits, callback = asyncio.run(acknowledged_at_commit_and_revocation(Consumer.on_partitions_revoked))
    assert commits == [{tp: [5, 6, 7]}]  # committed while faust still knew them
    assert callback == [{}]  # then faust's revocation, which forgets them
    commits, callback = asyncio.run(
        acknowledged_at_commit_and_revocation(FaustConsumer.on_partitions_revoked)
    )
    assert commits == [] and callback == [{}]  # faust's: forgotten before any commit


async def recover_through_cancellations(loop: Any, cancelled: int) -> tuple[int, BaseException | None]:
    """Run recovery ``loop`` on a real app's recovery service whose first ``cancelled`` awaited
    requests end in ``CancelledError`` (as a client's cancelled request does) and whose next
    one finds the worker stopping; return how many rounds began, and what ended the loop."""
    app = faust.App("recovering", broker="kafka://127.0.0.1:1", TableManager=faust_internals.TableManager)
    recovery = app.tables.recovery
    assert isinstance(recovery, faust_internals.Recovery)
    rounds = 0

    async def wait(coro: Any, timeout: Any = None) -> None:
        nonlocal rounds
        rounds += 1
        if asyncio.iscoroutine(coro):
            coro.close()
        if rounds <= cancelled:
            raise asyncio.CancelledError  # from below: nobody cancelled the recovery task
        raise ServiceStopped

    recovery._wait = wait  # type: ignore[method-assign]
    recovery.signal_recovery_start.set()  # a rebalance
    try:
        await loop(recovery)
    except asyncio.CancelledError as error:
        return rounds, error
    finally:
        app.consumer._thread.thread_loop.close()  # type: ignore[attr-defined]  # never started
    return rounds, None


@pytest.mark.parametrize("cancelled", [1, 3])
def test_table_recovery_starts_again_after_a_cancellation_from_below(cancelled: int) -> None:
    upstream = faust_internals.FaustRecovery._restart_recovery.fun  # type: ignore[attr-defined]
    rounds, ended = asyncio.run(recover_through_cancellations(upstream, cancelled))
    assert rounds == 1 and isinstance(ended, asyncio.CancelledError)  # faust's loop is over for good
    ours = faust_internals.Recovery._restart_recovery.fun  # type: ignore[attr-defined]
    rounds, ended = asyncio.run(recover_through_cancellations(ours, cancelled))
    assert rounds == cancelled + 1 and ended is None  # recovered again each time, then stopped


def test_table_recovery_ends_when_its_own_task_is_cancelled() -> None:
    async def cancel_it() -> bool:
        app = faust.App("recovering", broker="kafka://127.0.0.1:1", TableManager=faust_internals.TableManager)
        recovery = app.tables.recovery
        task = asyncio.ensure_future(faust_internals.Recovery._restart_recovery.fun(recovery))  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)  # waiting for a rebalance
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        app.consumer._thread.thread_loop.close()  # type: ignore[attr-defined]  # never started
        return task.cancelled()

    assert asyncio.run(cancel_it())


async def stop_a_fresh_reader(stop: Any) -> BaseException | None:
    """Stop (with ``stop``) aiokafka's coordinator of a consumer without a group right after it
    was made, before its own task first ran, as a reader that got a quick answer does."""
    client = SimpleNamespace(cluster=ClusterMetadata())
    coordinator = NoGroupCoordinator(client, SubscriptionState())
    try:
        await stop(SimpleNamespace(stop=coordinator.close))
    except asyncio.CancelledError as error:
        return error
    return None


def test_a_reader_stopped_at_once_does_not_raise_its_own_cancellation() -> None:
    async def upstream(reader: Any) -> None:
        await reader.stop()

    assert isinstance(asyncio.run(stop_a_fresh_reader(upstream)), asyncio.CancelledError)  # aiokafka's
    assert asyncio.run(stop_a_fresh_reader(faust_internals.stop_reader)) is None


def test_a_reader_stopped_while_its_caller_is_cancelled_lets_the_cancellation_through() -> None:
    async def cancelled_while_stopping() -> bool:
        gate = asyncio.Event()

        async def stop() -> None:
            await gate.wait()

        task = asyncio.ensure_future(faust_internals.stop_reader(SimpleNamespace(stop=stop)))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert asyncio.run(cancelled_while_stopping())
