"""The worker's Kafka transport: faust's aiokafka driver with a cheaper hand-off to the streams.

For every fetched message, faust's consumer loop runs the delivery callback through
``Service.wait_first``: a task for the callback and three more for the events that can
interrupt it (flow suspended for a rebalance, consumer stopped or crashed), then
``asyncio.wait`` on the four. The callback almost never waits (the stream's buffer has
room), and at thousands of messages a second this machinery was about a sixth of the
worker's time.

:class:`Consumer` runs the callback directly up to its first suspension instead. When it
finishes there, which is the usual case, no task is made. When it has to wait (flow
stopped, a full buffer, the producer's buffer full), the rest of it runs under
``wait_first`` exactly as in faust, so a rebalance still interrupts it.

The loop below is faust-streaming's ``Consumer._drain_messages`` (BSD licence) with that
one change; faust-streaming is pinned exactly, and a new version needs this file compared
with its loop again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import Message
from mode import ServiceT


class Consumer(driver.Consumer):
    """faust's aiokafka consumer, delivering each message without a task when it can."""

    async def _deliver(self, callback: Callable[[Message], Awaitable[None]], message: Message) -> None:
        rest = run_until_suspended(callback(message))
        if rest is not None:  # it waits: a rebalance (flow suspended) or a stop may interrupt it
            await self.wait_first(rest, self.suspend_flow.wait())

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover  # as faust's
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set  # type: ignore[attr-defined]
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        deliver = self._deliver
        yield_every, num_since_yield = 100, 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await asyncio.sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if self._commit_every is not None and self._n_acked >= self._commit_every:
                            self._n_acked = 0
                            await self.commit()
                        await deliver(callback, message)
                        set_read_offset(tp, offset)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class Transport(driver.Transport):
    """faust's aiokafka transport with :class:`Consumer`."""

    Consumer = Consumer


def run_until_suspended(coroutine: Awaitable[Any]) -> Coroutine[Any, Any, None] | None:
    """Run ``coroutine`` in the current task up to the point where it first waits.

    Returns ``None`` when it finished without waiting (its exception, if any, is raised here);
    else a coroutine that finishes it, to be awaited or run as a task, which resumes it when
    what it waits on is done and passes exceptions there (cancellation included) into it, as
    its own task would.
    """
    if not isinstance(coroutine, Coroutine):  # another awaitable: nothing to step by hand
        return _await(coroutine)
    try:
        waiting_on = coroutine.send(None)
    except StopIteration:
        return None
    return _resume(coroutine, waiting_on)


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable


class _Pending:
    """Awaitable for what a suspended coroutine yielded (a future, or ``None`` for a bare yield)."""

    def __init__(self, yielded: Any) -> None:
        self.yielded = yielded

    def __await__(self) -> Generator[Any, None, None]:
        if self.yielded is None:
            yield None
        else:  # the coroutine's own await flagged the future as handed to a task; take it over
            self.yielded._asyncio_future_blocking = False
            yield from self.yielded.__await__()


async def _resume(coroutine: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
    while True:
        try:
            await _Pending(waiting_on)
        except BaseException as exc:  # handed to the coroutine, which decides
            try:
                waiting_on = coroutine.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting_on = coroutine.send(None)
        except StopIteration:
            return
