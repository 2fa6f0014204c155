"""Settings of the stream processors, from ``RECSYS_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class StreamSettings(BaseSettings):
    """What the stream worker needs."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", env_file=".env", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    app_id: str = "recsys-streams"
    """Consumer group and prefix of the worker's internal topics."""
    store: str = "rocksdb://"
    """Table storage: rocksdb:// (durable local state) or memory://."""
    data_dir: Path = Path("stream-data")
    web_port: int = 6066
    """The worker's web views (``/stats/``, ``/users/{id}/``) on 127.0.0.1."""
