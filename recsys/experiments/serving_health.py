"""Serving guardrails per model version, from the API's Prometheus metrics.

The API records every request in the ``recsys_request_seconds`` histogram, labelled with
the route, the status and the model version that answered. Summed over the replicas'
``/metrics`` pages, the buckets of the recommendation route give each version's p99
latency (interpolated within its bucket, as Prometheus' ``histogram_quantile`` does) and
its share of server errors. The numbers cover each replica's lifetime so far.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

RECOMMEND_ROUTE = "/v1/recommendations"
HISTOGRAM = "recsys_request_seconds"
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class ServingHealth:
    """One model version's requests on the recommendation route."""

    requests: int
    errors: int
    """Answers with a 5xx status."""
    p99_ms: float
    over: tuple[tuple[float, int], ...] = ()
    """For each finite bucket bound (ms), the requests slower than it."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def slower_than(self, limit_ms: float) -> int:
        """Requests certainly slower than ``limit_ms``: those over the first bucket bound at or
        above it (a bucket that straddles the limit is not counted)."""
        return next((count for bound, count in sorted(self.over) if bound >= limit_ms), 0)


def serving_health(pages: Iterable[str], *, route: str = RECOMMEND_ROUTE) -> dict[str, ServingHealth]:
    """Per model version, its requests, server errors and p99 latency over every page given.

    Parameters
    ----------
    pages : iterable of str
        ``/metrics`` pages (Prometheus text format), one per replica.
    route : str
        The route to judge.
    """
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    errors: dict[str, float] = defaultdict(float)
    for page in pages:
        for name, labels, value in _samples(page):
            if labels.get("route") != route or "model_version" not in labels:
                continue
            version = labels["model_version"]
            if name == f"{HISTOGRAM}_bucket":
                buckets[version][float(labels["le"])] += value
            elif name == f"{HISTOGRAM}_count" and labels.get("status", "").startswith("5"):
                errors[version] += value
    out = {}
    for version, counts in buckets.items():
        total = counts.get(math.inf, 0.0)
        over = tuple(
            (bound * 1000.0, int(total - count))
            for bound, count in sorted(counts.items())
            if math.isfinite(bound)
        )
        out[version] = ServingHealth(int(total), int(errors[version]), quantile(0.99, counts) * 1000.0, over)
    return out


def quantile(q: float, cumulative: dict[float, float]) -> float:
    """The ``q`` quantile of a histogram given as upper bound -> cumulative count.

    Linear within the bucket that holds it; the last finite bound when it falls in ``+Inf``.
    """
    bounds = sorted(cumulative)
    total = cumulative.get(math.inf, cumulative[bounds[-1]] if bounds else 0.0)
    if total <= 0:
        return 0.0
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below) if count > below else bound
        lower, below = bound, count
    return lower


def _samples(page: str) -> Iterable[tuple[str, dict[str, str], float]]:
    for line in page.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = {m["key"]: m["value"] for m in _LABEL.finditer(match["labels"])}
            yield match["name"], labels, float(match["value"])
