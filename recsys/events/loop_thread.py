"""An event loop of its own on a daemon thread, for synchronous callers of asyncio clients.

The event backbone's client is asyncio-only. A caller without an event loop of its own (a
request handler's thread, a timer run in an executor, the CLI) keeps its long-lived
clients on a :class:`LoopThread`: they are created, used and stopped by coroutines run on
that loop, and the caller waits for each result. A one-shot read needs none of this: it
runs with :func:`asyncio.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CLOSE_TIMEOUT_S = 5.0


class LoopThread:
    """A running event loop on a daemon thread named ``name``.

    Parameters
    ----------
    name : str
        The thread's name.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop; cancelling the future cancels it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (from any thread but the loop's).

        Raises
        ------
        TimeoutError
            When it has not finished after ``timeout_s``; it is cancelled.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(f"{self._thread.name}: run() from the loop's own thread would never return")
        future = self.submit(coro)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and await its result from another event loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """Call ``callback(*args)`` on the loop's thread, without waiting."""
        self.loop.call_soon_threadsafe(callback, *args)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Cancel what still runs on the loop, stop it and close it (idempotent).

        The clients on the loop are the caller's to stop first.
        """
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            with contextlib.suppress(TimeoutError):  # stopped regardless
                self.run(_cancel_others(), timeout_s)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_others() -> None:
    """Cancel every other task of the running loop and wait until they have ended."""
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
