"""Waking an asyncio load generator on time: a ``timerfd`` instead of the event loop's timers.

asyncio's timers wait in ``epoll`` with a timeout in whole milliseconds, rounded up, so a
request scheduled for a given instant goes out 0.5 ms late on average, and an open-loop
generator counts that lateness as the server's latency. A ``timerfd`` armed for the earliest
scheduled send wakes ``epoll`` with nanosecond resolution, without spinning. Where there is
no ``timerfd`` (not Linux), :class:`Pacer` falls back to ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import heapq
import itertools
import os
import time

CLOCK_MONOTONIC, TFD_NONBLOCK, TFD_CLOEXEC, TFD_TIMER_ABSTIME = 1, 0o4000, 0o2000000, 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timerfd() -> tuple[int, ctypes.CDLL] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
    except (OSError, AttributeError):
        return None
    return (fd, libc) if fd >= 0 else None


class Pacer:
    """``await pacer.until(t)`` resumes at ``t`` on ``time.perf_counter``'s clock (monotonic).

    One per event loop; :meth:`close` when done. ``timerfd=False`` waits with
    ``asyncio.sleep`` (for comparison).
    """

    def __init__(self, *, timerfd: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        self._timer = _timerfd() if timerfd else None
        self._due: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._armed = float("inf")
        if self._timer is not None:
            self._loop.add_reader(self._timer[0], self._fire)

    @property
    def precise(self) -> bool:
        """Whether a ``timerfd`` paces the waits."""
        return self._timer is not None

    async def until(self, when: float) -> None:
        if when <= time.perf_counter():
            return
        if self._timer is None:
            await asyncio.sleep(when - time.perf_counter())
            return
        future: asyncio.Future[None] = self._loop.create_future()
        heapq.heappush(self._due, (when, next(self._order), future))
        if when < self._armed:
            self._arm(when)
        await future

    def close(self) -> None:
        if self._timer is not None:
            self._loop.remove_reader(self._timer[0])
            os.close(self._timer[0])
            self._timer = None

    def _arm(self, when: float) -> None:
        assert self._timer is not None
        fd, libc = self._timer
        seconds = int(when)
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(seconds, int((when - seconds) * 1e9)))
        libc.timerfd_settime(fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None)
        self._armed = when

    def _fire(self) -> None:
        assert self._timer is not None
        with contextlib.suppress(BlockingIOError):
            os.read(self._timer[0], 8)
        now = time.perf_counter()
        while self._due and self._due[0][0] <= now:
            _, _, future = heapq.heappop(self._due)
            if not future.done():
                future.set_result(None)
        self._armed = float("inf")
        if self._due:
            self._arm(self._due[0][0])
