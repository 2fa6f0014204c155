"""A circuit breaker: after a failure, calls are refused at once for a cool-down, then one trial
call decides whether they flow again.

::

    closed ──failure──▶ open ──cool-down over, next call is the trial──▶ half-open
      ▲                  ▲                                                 │
      └────success───────┼─────────────────────────────────────────────────┤
                         └──────────────────failure────────────────────────┘

Opening is logged once as a warning and closing once as info; the trials in between are
logged at debug level only, so a long outage writes two lines. The lock guards the state
only: guarded calls run concurrently (a breaker that held its lock during the call would
serialise every request behind a slow one).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class BreakerState(enum.IntEnum):
    """The breaker's state; the values are those of its Prometheus gauge."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitOpen(Exception):
    """A call refused without being tried: the breaker is open, or its one trial is in flight."""

    def __init__(self, name: str, retry_in_s: float) -> None:
        super().__init__(f"{name}: circuit open, next trial in {retry_in_s:.1f} s")
        self.retry_in_s = retry_in_s


class CircuitBreaker:
    """Refuses calls for ``cool_down_s`` after a failure, then lets one trial call through.

    Parameters
    ----------
    name : str
        What the breaker guards, in its log lines.
    cool_down_s : float
        How long calls are refused after a failure before a trial.
    failures : tuple of exception types
        Exceptions that count as the guarded service failing; any other exception leaves
        the state as it was.
    on_change : callable, optional
        Called with the new state on every transition (under the lock: keep it quick).
    clock : callable
        Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        name: str,
        *,
        cool_down_s: float,
        failures: tuple[type[BaseException], ...],
        on_change: Callable[[BreakerState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.cool_down_s, self.failures = name, cool_down_s, failures
        self.on_change, self.clock = on_change, clock
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._trial = False
        self._lock = threading.Lock()
        if on_change is not None:
            on_change(self._state)

    @property
    def state(self) -> BreakerState:
        return self._state

    @contextmanager
    def guard(self) -> Iterator[bool]:
        """Run the ``with`` block if the breaker admits it; yields ``True`` for the trial call.

        Raises :class:`CircuitOpen` at once when refused. The block raising one of
        ``failures`` opens the breaker; leaving it normally closes it; any other exception
        (a cancelled request) leaves the state alone and frees the trial's turn.
        """
        trial = self._admit()
        try:
            yield trial
        except self.failures as exc:
            self._failed(exc)
            raise
        except BaseException:
            if trial:
                self._abandon_trial()
            raise
        self._succeeded()

    def _admit(self) -> bool:
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return False
            waited = self.clock() - self._opened_at
            if self._state is BreakerState.OPEN and waited >= self.cool_down_s:
                self._set(BreakerState.HALF_OPEN)
                log.debug("%s: cool-down over, trying one call", self.name)
            if self._state is BreakerState.HALF_OPEN and not self._trial:
                self._trial = True
                return True
            raise CircuitOpen(self.name, max(self.cool_down_s - waited, 0.0))

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            if self._state is BreakerState.OPEN:
                return  # a call admitted before the breaker opened: the cool-down stands
            was, self._trial = self._state, False
            self._opened_at = self.clock()
            self._set(BreakerState.OPEN)
            if was is BreakerState.CLOSED:
                log.warning(
                    "%s: circuit open after %s: %s; calls are refused at once, one is tried every %.0f s",
                    self.name,
                    type(exc).__name__,
                    exc,
                    self.cool_down_s,
                )
            else:
                log.debug("%s: the trial failed (%s); open again", self.name, exc)

    def _succeeded(self) -> None:
        with self._lock:
            if self._state is not BreakerState.HALF_OPEN:
                return  # closed already, or a late answer to a call admitted before the failure
            self._trial = False
            self._set(BreakerState.CLOSED)
            log.info("%s: circuit closed, calls flow again", self.name)

    def _abandon_trial(self) -> None:
        with self._lock:
            self._trial = False

    def _set(self, state: BreakerState) -> None:
        self._state = state
        if self.on_change is not None:
            self.on_change(state)
