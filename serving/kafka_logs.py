"""kafka-python's own loggers, quieted: each of their messages is passed once, its repeats dropped.

While a broker is away, kafka-python's clients retry every few seconds and log each attempt
(a connection refused, a bootstrap that failed), dozens of lines a minute. The feedback
breaker and the topic followers already report the broker's state once per change, so the
first of each of kafka-python's messages is kept and its repeats are dropped for a while.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

REPEAT_WINDOW_S = 600.0
"""How long a kafka-python message, once logged, is not logged again."""
MAX_REMEMBERED = 1000
"""Distinct messages remembered; past this the memory starts over (a few repeats may pass)."""


class FirstOfEach(logging.Filter):
    """Passes a record unless the same logger logged the same message at the same level lately.

    Messages are compared by their template (``record.msg``), not their arguments, so a
    connection error to each of several addresses counts as one message.

    Parameters
    ----------
    window_s : float
        How long a passed message keeps its repeats out.
    clock : callable
        Monotonic seconds (tests pass their own).
    """

    def __init__(
        self, window_s: float = REPEAT_WINDOW_S, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window_s, self.clock = window_s, clock
        self._passed: dict[tuple[str, int, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            last = self._passed.get(key)
            if last is not None and now - last < self.window_s:
                return False
            if len(self._passed) >= MAX_REMEMBERED:
                self._passed.clear()
            self._passed[key] = now
            return True


KAFKA_FILTER = FirstOfEach()
"""The one filter on every kafka-python logger of the process."""


def quiet_kafka_logs() -> None:
    """Put :data:`KAFKA_FILTER` on kafka-python's loggers (idempotent; call before building a client).

    A logger's filter applies only to the records logged on that logger, so it goes on each
    of ``kafka``'s module loggers, all created when the package is imported.
    """
    import kafka  # noqa: F401  (creates the module loggers)

    for name in list(logging.Logger.manager.loggerDict):
        if name == "kafka" or name.startswith("kafka."):
            logger = logging.getLogger(name)
            if KAFKA_FILTER not in logger.filters:
                logger.addFilter(KAFKA_FILTER)
