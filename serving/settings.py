"""Settings of the API process, from ``RECSYS_*`` environment variables (see deploy/.env.example)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator

from recsys.access.rates import DEFAULT_PER_KEY, DEFAULT_PER_USER, parse_rate
from recsys.settings import DEFAULT_KAFKA_BOOTSTRAP, RecsysSettings

DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_RETRY_AFTER_S = 5
DEFAULT_UNREADY_AFTER_CHECKS = 3
DEFAULT_BREAKER_COOL_DOWN_S = 5.0


class ServingSettings(RecsysSettings):
    """What the API needs to start, besides the shared settings (registry, broker, ...)."""

    model: str = "production"
    """Version or alias the service loads at start (``recsys serve --model``)."""
    host: str = "127.0.0.1"
    """Interface ``recsys serve`` listens on (``--host``)."""
    port: int = Field(default=8000, ge=0, le=65535)
    """Port ``recsys serve`` listens on (``--port``)."""
    workers: int = Field(default=1, ge=1)
    """Worker processes of ``recsys serve`` (``--workers``); each keeps its own rate-limit counts."""
    auth_required: bool = True
    """Every route but health, readiness, metrics and the API docs needs an API key
    (``recsys keys create``, see docs/api-keys.md). ``false`` opens every route to every caller:
    for local experiments only (logged as a warning at start)."""
    admin_token: SecretStr | None = None
    """A secret accepted as an API key with the ``admin`` scope, besides the keys of the registry."""
    feedback_rate_per_key: str = DEFAULT_PER_KEY
    """Feedback events one API key may post per window (``limits``' notation: ``200/second``,
    ``600/minute``); beyond it, 429 with Retry-After. Counted per process."""
    feedback_rate_per_user: str = DEFAULT_PER_USER
    """Feedback events about one listener (``user_id``) per window, from any key; counted per process."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    retry_after_s: int = DEFAULT_RETRY_AFTER_S
    reload_interval_s: float = 2.0
    """How often the registry is checked for a newly promoted version (0 disables the check)."""
    registry_unready_after_checks: int = Field(default=DEFAULT_UNREADY_AFTER_CHECKS, ge=0)
    """/readyz answers 503 once the registry has failed to be read for this many check
    intervals (0: a registry that cannot be read never makes the replica unready)."""
    verify_mb_per_s: float = 250.0
    """Pace of checksum verification of a version loaded while another serves (0: no limit)."""
    impression_log: str = "memory://"
    """Where served lists are logged: memory://, file:///path.jsonl or kafka://host:port
    (the ``recommendations-served`` topic)."""
    feedback_sink: str = f"kafka://{DEFAULT_KAFKA_BOOTSTRAP}"
    """Where POST /v1/feedback writes: kafka://host:port (the event backbone) or memory://."""
    feedback_timeout_s: float = 5.0
    """How long a feedback request waits for the broker's confirmation before answering 503."""
    feedback_breaker_cool_down_s: float = Field(default=DEFAULT_BREAKER_COOL_DOWN_S, gt=0)
    """After a feedback write fails, how long feedback requests are refused at once (503)
    before a single request tries the broker again."""
    follow_model_events: bool = True
    """Follow the ``model-events`` topic on ``kafka_bootstrap``: check the registry as soon as
    a change is announced, besides every ``reload_interval_s``. Whatever the feedback sink."""
    follow_user_updates: bool = True
    """Follow the ``user-updates`` topic on ``kafka_bootstrap``: apply the speed layer's
    per-listener hate sets and vectors. Whatever the feedback sink."""
    max_batch: int = 32
    """Concurrent recommendation requests scored together in one pass over the item factors."""
    max_in_flight: int = Field(default=8, ge=0)
    """Requests in progress at once (health, metrics and docs aside); beyond it a request is
    answered 503 ``overloaded`` at once, with ``Retry-After: overload_retry_after_s`` (0: no bound)."""
    overload_retry_after_s: int = Field(default=1, ge=0)
    access_log: bool = False
    """Log every request (uvicorn's access log); off by default, /metrics and the impression
    log already account for each request."""
    approximate: bool = True
    """Score with a version's HNSW index when it ships one (large catalogues); else exactly."""
    scoring_threads: int = 0
    """onnxruntime intra-op threads per worker (0: one per core)."""
    stats_url: str = ""
    """The stream worker's ``/stats/`` URL: ``/dashboard`` then shows live experiment counters
    (otherwise the numbers of the rollout controller's last decision)."""
    prefer_gpu: bool = False
    """Ask onnxruntime for CUDA; it falls back to CPU and /v1/models says which is used."""

    @field_validator("feedback_rate_per_key", "feedback_rate_per_user")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    def kafka_features(self) -> dict[str, str | None]:
        """The broker each Kafka-dependent feature of the API talks to; ``None``: not on Kafka.

        Returns
        -------
        dict
            ``feedback sink``, ``impression log`` (from their URLs), ``follow model-events``
            and ``follow user-updates`` (on ``kafka_bootstrap`` when their setting is on).
        """
        return {
            "feedback sink": kafka_broker(self.feedback_sink),
            "impression log": kafka_broker(self.impression_log),
            "follow model-events": self.kafka_bootstrap if self.follow_model_events else None,
            "follow user-updates": self.kafka_bootstrap if self.follow_user_updates else None,
        }


def kafka_broker(url: str) -> str | None:
    """``host:port`` of a ``kafka://host:port`` URL; ``None`` for any other scheme."""
    return url.removeprefix("kafka://") if url.startswith("kafka://") else None


@lru_cache
def get_settings() -> ServingSettings:
    """Settings read once per process (tests pass their own to ``create_app``)."""
    return ServingSettings()
