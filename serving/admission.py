"""Bounded admission: beyond a number of requests in progress, an immediate 503.

Without a bound, a replica offered more than it can score queues every request, and every
caller waits: at 900 requests/s on the 200k-track catalogue the median answer took 2.4 s.
:class:`Admission` lets at most ``limit`` requests of the guarded routes be in progress at
once and answers any request beyond that at once with 503 and ``Retry-After`` (error
``overloaded``), so admitted requests keep their latency and a client, or the load
balancer, can go elsewhere. Health, readiness, metrics and the API documentation are never
refused: they stay answerable under overload.

Plain ASGI, like :mod:`serving.middleware`: nothing per request but a counter.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from recsys.errors import Overloaded
from serving.metrics import REGISTRY
from serving.middleware import ASGIApp, Receive, Scope, Send, send_error

ALWAYS_ADMITTED = ("/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json", "/static")
"""Path prefixes never refused."""

IN_PROGRESS = Gauge(
    "recsys_requests_in_progress", "Requests of the guarded routes in progress.", registry=REGISTRY
)
REFUSED = Counter(
    "recsys_requests_refused_total",
    "Requests refused at once because the replica was full.",
    registry=REGISTRY,
)


class Admission:
    """At most ``limit`` requests in progress on the guarded routes; a 503 for the rest.

    Parameters
    ----------
    app : ASGI application
    limit : int
        Requests in progress at once (0: no bound).
    retry_after_s : int
        ``Retry-After`` of a refusal.
    """

    def __init__(self, app: ASGIApp, *, limit: int, retry_after_s: int) -> None:
        self.app, self.limit, self.retry_after_s = app, limit, retry_after_s
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limit or scope["path"].startswith(ALWAYS_ADMITTED):
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.limit:
            REFUSED.inc()
            await self._refuse(scope, send)
            return
        self.in_progress += 1
        IN_PROGRESS.set(self.in_progress)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1
            IN_PROGRESS.set(self.in_progress)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        exc = Overloaded(f"over {self.limit} requests in progress; retry in {self.retry_after_s} s")
        request_id = scope.get("state", {}).get("request_id")
        await send_error(send, exc, request_id, [(b"retry-after", str(self.retry_after_s).encode())])
