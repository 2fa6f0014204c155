"""A coroutine stepped by hand up to its first suspension (:func:`run_until_suspended`).

The stream worker's consumer (:class:`streams.faust_internals.Consumer`) delivers each
fetched message this way: when the delivery finishes without waiting, which is the usual
case, no task is made for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine, Generator
from typing import Any


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
