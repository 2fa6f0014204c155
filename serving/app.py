"""``create_app(settings)``: wires settings, the model holder, middleware, error handling and routes."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from recsys import __version__
from recsys.errors import PayloadTooLarge
from recsys.impressions import open_log
from recsys.registry import FileRegistry
from serving import errors
from serving.batcher import Batcher
from serving.metrics import ERRORS, LATENCY, LOADED
from serving.routes import health, models, recommendations, rollout
from serving.settings import ServingSettings, get_settings
from serving.state import ModelHolder, Watcher

log = logging.getLogger(__name__)


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The API application; the model named by ``settings.model`` is loaded at start-up."""
    settings = settings or get_settings()
    holder = ModelHolder(FileRegistry(settings.registry), prefer_gpu=settings.prefer_gpu)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if holder.try_load(settings.model) and holder.current is not None:
            LOADED.labels(model_version=holder.current.version).set(1)
        holder.refresh_plan()
        watcher = (
            Watcher(holder, settings.model, settings.reload_interval_s)
            if settings.reload_interval_s > 0
            else None
        )
        if watcher:
            watcher.start()
        yield
        if watcher:
            watcher.stop()
        await app.state.batcher.close()
        app.state.impressions.close()

    app = FastAPI(
        title="recsys",
        version=__version__,
        summary="Next-song recommendations, always with the model version that answered.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.holder = settings, holder
    app.state.impressions = open_log(settings.impression_log)
    app.state.batcher = Batcher(settings.max_batch)
    errors.install(app, retry_after_s=settings.retry_after_s)
    app.middleware("http")(_observe(settings))
    for module in (health, recommendations, models, rollout):
        app.include_router(module.router)
    return app


def _observe(
    settings: ServingSettings,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request.state.request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            exc = PayloadTooLarge(f"request body over {settings.max_body_bytes} bytes")
            return JSONResponse(
                {"error": exc.code, "message": exc.message, "request_id": request.state.request_id},
                status_code=exc.http_status,
            )
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        holder: ModelHolder = request.app.state.holder
        version = holder.current.version if holder.current else "none"
        LATENCY.labels(path, request.method, str(response.status_code), version).observe(
            time.perf_counter() - start
        )
        if response.status_code >= 400:
            ERRORS.labels(path, str(response.status_code)).inc()
        response.headers["x-request-id"] = request.state.request_id
        return response

    return middleware
