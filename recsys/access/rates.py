"""Feedback rate limits per API key and per listener, counted in events, with the ``limits`` library.

A request of N events counts N toward its key's limit, and each listener's events count
toward that listener's limit. The windows move (an exact count of the last window's events,
not fixed intervals that admit a double burst at their boundary) and live in this process's
memory: each replica, and each worker process of one, counts on its own, so ``P`` processes
admit up to ``P`` times a limit in all. A refused request counts toward nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping

import limits
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from recsys.errors import InvalidRequest, RateLimited

DEFAULT_PER_KEY = "10000/second"
"""Twice the feedback benchmark's rate from one client, and room for a full batch (1,000 events)."""
DEFAULT_PER_USER = "600/minute"
"""Far above what one listener does, yet a phone that was offline can send its backlog in one batch."""
KEY, USER = "key", "user"
"""The ``limit`` of a refusal (and of the ``recsys_requests_limited_total`` metric)."""


def parse_rate(text: str) -> limits.RateLimitItem:
    """A limit in ``limits``' notation: ``200/second``, ``20 per second``, ``600/minute``, ``1000/hour``.

    Raises
    ------
    ValueError
        Not a rate limit.
    """
    try:
        return limits.parse(text)
    except ValueError as exc:
        raise ValueError(f"not a rate limit: {text!r} (e.g. 200/second or 600/minute)") from exc


class FeedbackLimits:
    """The per-key and per-listener limits of ``POST /v1/feedback``.

    Parameters
    ----------
    per_key : str
        Events per window from one API key, e.g. ``10000/second``.
    per_user : str
        Events per window about one listener (``user_id``), e.g. ``600/minute``.

    Notes
    -----
    :meth:`admit` tests every limit and then counts, with no await in between: call it from
    the event loop (one thread), where nothing can come between the two.
    """

    def __init__(self, *, per_key: str, per_user: str) -> None:
        self.per_key, self.per_user = parse_rate(per_key), parse_rate(per_user)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def admit(self, *, client: str, events_per_user: Mapping[str, int]) -> None:
        """Count one request's events, or refuse it without counting anything.

        Parameters
        ----------
        client : str
            The API key's name (one counter per key).
        events_per_user : mapping of str to int
            The request's events per listener.

        Raises
        ------
        InvalidRequest
            More events than a limit admits in a whole window: never admitted, split the batch.
        RateLimited
            Over a limit now; ``retry_after_s`` says when its window has room again.
        """
        total = sum(events_per_user.values())
        self._fits(total, max(events_per_user.values(), default=0))
        if not self._limiter.test(self.per_key, KEY, client, cost=total):
            raise self._refusal(KEY, self.per_key, [client], "per API key")
        test = self._limiter.test
        full = [user for user, n in events_per_user.items() if not test(self.per_user, USER, user, cost=n)]
        if full:
            raise self._refusal(USER, self.per_user, full, f"per listener ({len(full)} of this request's)")
        self._limiter.hit(self.per_key, KEY, client, cost=total)
        for user, n in events_per_user.items():
            self._limiter.hit(self.per_user, USER, user, cost=n)

    def _fits(self, total: int, most_of_one_user: int) -> None:
        if total > self.per_key.amount:
            raise InvalidRequest(
                f"{total} events in one request are more than the feedback limit per API key "
                f"admits ({self.per_key}): send smaller batches"
            )
        if most_of_one_user > self.per_user.amount:
            raise InvalidRequest(
                f"{most_of_one_user} events of one listener in one request are more than the feedback "
                f"limit per listener admits ({self.per_user}): send smaller batches"
            )

    def _refusal(
        self, limit: str, item: limits.RateLimitItem, identifiers: Collection[str], whom: str
    ) -> RateLimited:
        now = time.time()
        waits = [self._limiter.get_window_stats(item, limit, i).reset_time - now for i in identifiers]
        retry_after_s = max(1, math.ceil(max(waits)))
        return RateLimited(
            f"over the feedback limit of {item} {whom}; retry in {retry_after_s} s",
            limit=limit,
            retry_after_s=retry_after_s,
        )
