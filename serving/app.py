"""``create_app(settings)``: wires settings, the model holder, middleware, error handling and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from recsys import __version__
from recsys.access.guard import Guard
from recsys.access.keys import KeyStore
from recsys.access.rates import FeedbackLimits
from recsys.errors import RecsysError
from recsys.events.topics import MODEL_EVENTS
from recsys.registry.announcer import announcer
from recsys.registry.store import FileRegistry
from serving import errors
from serving.admission import Admission
from serving.batcher import Batcher
from serving.feedback_sink import open_sink
from serving.follow import TopicFollower
from serving.impression_log import open_impressions
from serving.metrics import LOADED
from serving.middleware import Observe
from serving.routes import dashboard, feedback, health, models, recommendations, rollout
from serving.settings import ServingSettings, get_settings
from serving.state import ModelHolder, Watcher, settle_heap
from serving.user_updates import UserOverlay

log = logging.getLogger(__name__)


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The API application; the model named by ``settings.model`` is loaded at start-up."""
    settings = settings or get_settings()
    holder = ModelHolder(
        FileRegistry(settings.registry, announce=announcer(settings.model_events)),
        prefer_gpu=settings.prefer_gpu,
        threads=settings.scoring_threads,
        approximate=settings.approximate,
        verify_bytes_per_s=settings.verify_mb_per_s * 1e6 or None,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if holder.try_load(settings.model) and holder.current is not None:
            LOADED.labels(model_version=holder.current.version).set(1)
        holder.refresh_plan()
        settle_heap()
        _log_kafka_features(settings)
        app.state.overlay.start()
        app.state.watcher = watcher = Watcher(
            holder,
            settings.model,
            settings.reload_interval_s,
            unready_after_checks=settings.registry_unready_after_checks,
        )
        watcher.start()
        model_events = (
            TopicFollower(settings.kafka_bootstrap, MODEL_EVENTS.name, watcher.wake, from_beginning=False)
            if settings.follow_model_events
            else None
        )
        app.state.model_events = model_events
        if model_events:
            model_events.start()
        yield
        if model_events:
            model_events.stop()
        watcher.stop()
        await app.state.batcher.close()
        app.state.impressions.close()
        app.state.feedback.close()
        app.state.overlay.stop()

    app = FastAPIOffline(  # /docs and /redoc with their scripts served from here, no CDN
        title="recsys",
        version=__version__,
        summary="Next-song recommendations, always with the model version that answered.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.holder = settings, holder
    app.state.guard = _guard(settings)
    app.state.feedback_limits = FeedbackLimits(
        per_key=settings.feedback_rate_per_key, per_user=settings.feedback_rate_per_user
    )
    app.state.impressions = open_impressions(settings.impression_log)
    app.state.batcher = Batcher(settings.max_batch)
    app.state.feedback = open_sink(
        settings.feedback_sink,
        timeout_s=settings.feedback_timeout_s,
        cool_down_s=settings.feedback_breaker_cool_down_s,
    )
    app.state.overlay = UserOverlay(settings.kafka_bootstrap if settings.follow_user_updates else None)
    errors.install(app, retry_after_s=settings.retry_after_s)
    app.add_middleware(  # inside Observe: refusals get request ids and latency metrics
        Admission, limit=settings.max_in_flight, retry_after_s=settings.overload_retry_after_s
    )
    app.add_middleware(
        Observe,
        max_body_bytes=settings.max_body_bytes,
        model_version=lambda: holder.current.version if holder.current else "none",
    )
    for module in (health, recommendations, feedback, models, rollout, dashboard):
        app.include_router(module.router)
    return app


def _log_kafka_features(settings: ServingSettings) -> None:
    """One line at start: which features of the API use Kafka, and on which broker.

    Each feature has its own setting; a warning says when the followers' broker is not the one
    the feedback sink or the impression log write to (a likely mistake of configuration).
    """
    features = settings.kafka_features()
    urls = {"feedback sink": settings.feedback_sink, "impression log": settings.impression_log}
    log.info(
        "Kafka features: %s",
        ", ".join(
            f"{name} on {broker}" if broker else f"{name} off" + (f" ({urls[name]})" if name in urls else "")
            for name, broker in features.items()
        ),
    )
    followed = [topic for topic in ("model-events", "user-updates") if features[f"follow {topic}"]]
    written = sorted({broker for name in urls if (broker := features[name])})
    if followed and any(broker != settings.kafka_bootstrap for broker in written):
        log.warning(
            "the API writes to Kafka at %s but follows %s on %s (RECSYS_KAFKA_BOOTSTRAP)",
            ", ".join(written),
            " and ".join(followed),
            settings.kafka_bootstrap,
        )


def _guard(settings: ServingSettings) -> Guard:
    """The access check of the registry's keys; says once, at start, when it lets everyone in."""
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    guard = Guard(KeyStore(settings.registry), admin_token=token, required=settings.auth_required)
    if not settings.auth_required:
        log.warning("authentication is off (RECSYS_AUTH_REQUIRED=false): every route is open to every caller")
    elif token is None and not _any_active_key(guard.keys):
        log.warning(
            "no API key in %s and no admin token: every guarded route answers 401 until one is created "
            "(recsys keys create NAME --scopes ... --registry %s)",
            guard.keys.path,
            settings.registry,
        )
    return guard


def _any_active_key(keys: KeyStore) -> bool:
    try:
        return any(not record.revoked for record in keys.records())
    except RecsysError as exc:
        log.error("the API keys cannot be read: %s", exc.message)
        return False
