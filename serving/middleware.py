"""Request ids, the body size limit and latency metrics, as plain ASGI middleware.

Plain ASGI rather than ``BaseHTTPMiddleware``: it adds no task or stream per request,
which is most of a small request's cost on a busy event loop.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from recsys.errors import PayloadTooLarge, RecsysError
from serving.metrics import ERRORS, LATENCY

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
REQUEST_ID = b"x-request-id"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def new_request_id() -> str:
    """A random 128-bit id, hex."""
    return os.urandom(16).hex()


class Observe:
    """Give every request an id (``x-request-id``, the caller's if sent), enforce the body
    limit, and record latency and errors per route, status and serving model version.

    Parameters
    ----------
    app : ASGI application
    max_body_bytes : int
    model_version : callable
        The version being served now: the metrics label, unless the route set
        ``request.state.model_version`` (the version that answered, in an experiment).
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, model_version: Callable[[], str]) -> None:
        self.app, self.max_body_bytes, self.model_version = app, max_body_bytes, model_version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, length = None, None
        for name, value in scope["headers"]:
            if name == REQUEST_ID:
                request_id = value.decode("latin-1")[:128]
            elif name == b"content-length":
                length = value
        request_id = request_id or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        start, status = time.perf_counter(), 500
        body: Receive | None = receive
        if length is None and scope["method"] in BODY_METHODS:
            body = await _buffered(receive, self.max_body_bytes)
        elif length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            body = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID, request_id.encode())]
            await send(message)

        try:
            if body is None:
                await send_error(
                    send_with_id,
                    PayloadTooLarge(f"request body over {self.max_body_bytes} bytes"),
                    request_id,
                )
            else:
                await self.app(scope, body, send_with_id)
        finally:
            self._observe(scope, status, time.perf_counter() - start)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        code = str(status)
        version = scope.get("state", {}).get("model_version") or self.model_version()
        LATENCY.labels(route, scope["method"], code, version).observe(seconds)
        if status >= 400:
            ERRORS.labels(route, code).inc()


async def _buffered(receive: Receive, limit: int) -> Receive | None:
    """Read a body of unknown length (chunked) up front; ``None`` when it exceeds ``limit``."""
    messages, seen = [], 0
    while True:
        message = await receive()
        messages.append(message)
        seen += len(message.get("body", b""))
        if seen > limit:
            return None
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    replay = iter(messages)

    async def replayed() -> Message:
        return next(replay, None) or await receive()

    return replayed


async def send_error(
    send: Send, exc: RecsysError, request_id: str | None, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``exc`` in the documented error shape, straight from ASGI middleware (below the
    app's exception handlers)."""
    body = json.dumps({"error": exc.code, "message": exc.message, "request_id": request_id}).encode()
    start_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": exc.http_status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})
