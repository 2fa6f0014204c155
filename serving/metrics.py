"""Prometheus metrics of the API."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
LATENCY = Histogram(
    "recsys_request_seconds",
    "Request latency by route and model version.",
    ["route", "method", "status", "model_version"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
ERRORS = Counter(
    "recsys_errors_total", "Responses with status >= 400.", ["route", "status"], registry=REGISTRY
)
FALLBACKS = Counter(
    "recsys_popularity_fallbacks_total",
    "Answers from popularity (nothing known).",
    ["model_version"],
    registry=REGISTRY,
)
LOADED = Gauge(
    "recsys_model_loaded", "1 for the model version being served.", ["model_version"], registry=REGISTRY
)
FEEDBACK_EVENTS = Counter(
    "recsys_feedback_events_total", "Feedback events accepted (durable).", ["type"], registry=REGISTRY
)
IMPRESSIONS_DROPPED = Counter(
    "recsys_impressions_dropped_total",
    "Served lists that could not be written to the impression log.",
    registry=REGISTRY,
)
BACKGROUND_ERRORS = Counter(
    "recsys_background_errors_total",
    "Failures of the background threads (registry checks, topic followers, impression producer), "
    "each retried with backoff, by thread.",
    ["task"],
    registry=REGISTRY,
)
REGISTRY_CHECK_AGE = Gauge(
    "recsys_registry_check_age_seconds",
    "Seconds since the start of the model watcher's last successful registry check.",
    registry=REGISTRY,
)
LIMITED = Counter(
    "recsys_requests_limited_total",
    "Feedback requests refused (429) by a rate limit: per API key or per listener (user).",
    ["limit"],
    registry=REGISTRY,
)
for _limit in ("key", "user"):
    LIMITED.labels(limit=_limit)
FEEDBACK_BREAKER = Gauge(
    "recsys_feedback_breaker_state",
    "Circuit breaker of POST /v1/feedback: 0 closed, 1 open (refused at once), 2 half-open (one trial).",
    registry=REGISTRY,
)
