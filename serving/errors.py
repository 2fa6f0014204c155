"""The one place where service errors become HTTP responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from recsys.errors import RecsysError

log = logging.getLogger(__name__)
SERVICE_UNAVAILABLE = 503
"""Every 503 says when to retry (no model loaded yet, event backbone unreachable)."""


def install(app: FastAPI, *, retry_after_s: int) -> None:
    """Map :class:`RecsysError` to its status, and anything unexpected to a bare 500 without a traceback."""

    @app.exception_handler(RecsysError)
    async def recsys_error(request: Request, exc: RecsysError) -> JSONResponse:
        headers = {"Retry-After": str(retry_after_s)} if exc.http_status == SERVICE_UNAVAILABLE else None
        return JSONResponse(
            {
                "error": exc.code,
                "message": exc.message,
                "request_id": getattr(request.state, "request_id", None),
            },
            status_code=exc.http_status,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(
            {
                "error": "internal_error",
                "message": "internal error",
                "request_id": getattr(request.state, "request_id", None),
            },
            status_code=500,
        )
