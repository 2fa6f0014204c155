"""A private event loop on a thread: what the synchronous callers of the Kafka client run on."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from recsys.events.loop_thread import LoopThread


async def thread_name() -> str:
    await asyncio.sleep(0)
    return threading.current_thread().name


def test_coroutines_run_on_the_loops_own_thread_and_return_their_results() -> None:
    loop = LoopThread("test-loop")
    try:
        assert loop.run(thread_name()) == "test-loop"
        assert asyncio.run(loop.run_async(thread_name())) == "test-loop"  # from another event loop
        called = threading.Event()
        loop.call_soon(called.set)
        assert called.wait(5)
    finally:
        loop.close()


def test_a_run_that_times_out_is_cancelled() -> None:
    loop = LoopThread("test-timeout")
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            loop.run(forever(), timeout_s=0.2)
        assert time.monotonic() - started < 5
        assert cancelled.wait(5)
    finally:
        loop.close()


def test_errors_reach_the_caller() -> None:
    loop = LoopThread("test-errors")

    async def fail() -> None:
        raise KeyError("from the loop")

    try:
        with pytest.raises(KeyError, match="from the loop"):
            loop.run(fail())
    finally:
        loop.close()


def test_close_cancels_what_still_runs_and_is_idempotent() -> None:
    loop = LoopThread("test-close")
    ended = threading.Event()

    async def pending() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            ended.set()

    future = loop.submit(pending())
    loop.close()
    loop.close()
    assert ended.is_set() and future.cancelled()
    assert loop.loop.is_closed()


def test_run_from_the_loops_own_thread_is_refused_not_a_deadlock() -> None:
    loop = LoopThread("test-reentry")

    async def reenter() -> str:
        inner = thread_name()
        try:
            loop.run(inner)
        except RuntimeError as exc:
            return str(exc)
        return "ran"

    try:
        assert "would never return" in loop.run(reenter(), timeout_s=5)
    finally:
        loop.close()
