"""The worker's hand-off of a fetched message: run in place when it can, a task's semantics when not."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from streams.suspension import run_until_suspended


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(test())  # type: ignore[arg-type]


def test_a_callback_that_does_not_wait_finishes_in_place() -> None:
    done: list[int] = []

    async def deliver() -> None:
        done.append(1)

    async def test() -> None:
        tasks = len(asyncio.all_tasks())
        assert run_until_suspended(deliver()) is None
        assert done == [1]
        assert len(asyncio.all_tasks()) == tasks

    run(test)


def test_its_error_is_raised_in_place() -> None:
    async def deliver() -> None:
        raise ValueError("bad message")

    async def test() -> None:
        with pytest.raises(ValueError, match="bad message"):
            run_until_suspended(deliver())

    run(test)


def test_a_callback_that_waits_is_finished_with_what_it_waited_for() -> None:
    async def test() -> list[Any]:
        loop = asyncio.get_running_loop()
        room, more = loop.create_future(), loop.create_future()
        got: list[Any] = []

        async def deliver() -> None:
            got.append(await room)
            await asyncio.sleep(0)  # a bare yield
            got.append(await more)

        rest = run_until_suspended(deliver())
        assert rest is not None and got == []
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0.01)
        assert not task.done()
        room.set_result(1)
        loop.call_later(0.01, more.set_result, 2)
        await task
        return got

    assert run(test) == [1, 2]


def test_an_error_of_what_it_waited_for_reaches_the_callback() -> None:
    async def test() -> str:
        loop = asyncio.get_running_loop()
        room: asyncio.Future[int] = loop.create_future()
        seen: list[str] = []

        async def deliver() -> None:
            try:
                await room
            except OSError as exc:
                seen.append(str(exc))

        rest = run_until_suspended(deliver())
        assert rest is not None
        loop.call_later(0.01, room.set_exception, OSError("broker gone"))
        await rest
        return seen[0]

    assert run(test) == "broker gone"


def test_an_interrupted_wait_cancels_the_callback_as_its_task_would() -> None:
    """faust's wait_first cancels the delivery when the flow is suspended (a rebalance)."""

    async def test() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        room: asyncio.Future[None] = loop.create_future()
        cleaned: list[bool] = []

        async def deliver() -> None:
            try:
                await room
            finally:
                cleaned.append(True)

        rest = run_until_suspended(deliver())
        assert rest is not None
        task = asyncio.ensure_future(rest)
        suspended = asyncio.ensure_future(asyncio.sleep(0.01))
        done, _ = await asyncio.wait({task, suspended}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {suspended}
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return cleaned == [True], room.cancelled()

    assert run(test) == (True, True)


def test_another_awaitable_is_awaited() -> None:
    async def test() -> int:
        future = asyncio.get_running_loop().create_future()
        future.set_result(3)
        rest = run_until_suspended(future)
        assert rest is not None
        await rest
        return int(future.result())

    assert run(test) == 3
