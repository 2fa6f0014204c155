"""The Kafka client's own loggers (aiokafka's), quieted: each message passed once, its repeats dropped.

While a broker is away, aiokafka's clients retry every few seconds and log each attempt
(a connection refused, a metadata update that failed), dozens of lines a minute. The
feedback breaker and the topic followers already report the broker's state once per change,
so the first of each of the client's messages is kept and its repeats are dropped for a while.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

REPEAT_WINDOW_S = 600.0
"""How long a message of the Kafka client, once logged, is not logged again."""
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
"""The one filter on every logger of the Kafka client in the process."""
CLIENT = "aiokafka"


def quiet_kafka_logs() -> None:
    """Put :data:`KAFKA_FILTER` on aiokafka's loggers (idempotent; call before building a client).

    A logger's filter applies only to the records logged on that logger, so it goes on each
    of ``aiokafka``'s module loggers, created when its modules are imported (its clients'
    with the package, the admin client's with :mod:`aiokafka.admin`).
    """
    import aiokafka  # noqa: F401  (creates the module loggers)

    for name in list(logging.Logger.manager.loggerDict):
        if name == CLIENT or name.startswith(f"{CLIENT}."):
            logger = logging.getLogger(name)
            if KAFKA_FILTER not in logger.filters:
                logger.addFilter(KAFKA_FILTER)
