"""Failure streaks of the serving process's background threads: logged once, counted, retried later.

A background thread (the model watcher, a topic follower, the impression producer) never
stops on an exception: the first failure of a streak is logged as a warning with its type and
message, every failure is counted in ``recsys_background_errors_total{task=...}``, the wait
before the next try doubles up to a cap, and the first success after a streak is logged once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from serving.metrics import BACKGROUND_ERRORS

log = logging.getLogger(__name__)
FIRST_RETRY_S = 1.0
"""Wait after the first failure of a streak (doubled after each further one)."""
MAX_RETRY_S = 30.0
"""The longest wait between two tries."""
MAX_DOUBLINGS = 32
"""Past this the wait is capped anyway; it keeps the power of two finite."""


class FailureStreak:
    """The consecutive failures of one background task and the wait before its next try.

    Parameters
    ----------
    task : str
        Name of the task (its thread's name), the ``task`` label of the error counter.
    first_s : float
        Wait after the first failure of a streak.
    max_s : float
        Cap of the wait, which doubles after each further failure.
    then : str
        What the task does after a failure, said in the streak's one warning.
    logger : logging.Logger
        Where the streak's first failure (warning) and its end (info) are logged.
    clock : callable
        Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        task: str,
        *,
        first_s: float = FIRST_RETRY_S,
        max_s: float = MAX_RETRY_S,
        then: str = "retrying with backoff",
        logger: logging.Logger = log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task, self.first_s, self.max_s, self.then = task, first_s, max(max_s, first_s), then
        self.logger, self.clock = logger, clock
        self.failures = 0
        """Failures since the last success (0: healthy)."""
        self.since: float | None = None
        """When the current streak began (``None`` while healthy)."""
        self.last_error = ""
        """Type and message of the latest failure."""
        BACKGROUND_ERRORS.labels(task=task)  # the series exists (at 0) before the first failure

    def failed(self, exc: BaseException) -> float:
        """Count ``exc``, log it if it starts a streak, and return how long to wait before the next try."""
        BACKGROUND_ERRORS.labels(task=self.task).inc()
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.failures == 0:
            self.since = self.clock()
            self.logger.warning(
                "%s: %s (%s; logged once until it recovers)", self.task, self.last_error, self.then
            )
            self.logger.debug("%s: first failure of the streak", self.task, exc_info=exc)
        self.failures += 1
        return min(self.first_s * 2.0 ** min(self.failures - 1, MAX_DOUBLINGS), self.max_s)

    def succeeded(self) -> None:
        """End the streak, if any, with one line saying how long it lasted."""
        if self.failures == 0:
            return
        lasted = self.clock() - (self.since if self.since is not None else self.clock())
        self.logger.info("%s: recovered after %d failures in %.0f s", self.task, self.failures, lasted)
        self.failures, self.since = 0, None
