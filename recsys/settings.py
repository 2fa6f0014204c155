"""Settings of the core (registry location, logging), from ``RECSYS_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys.registry import DEFAULT_REGISTRY


class CoreSettings(BaseSettings):
    """What every process shares."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", env_file=".env", extra="ignore")

    registry: Path = DEFAULT_REGISTRY
    """Model registry folder (``file://`` registries only, for now)."""
    model_events: str = ""
    """Where registry changes are announced (``kafka://host:port``: the ``model-events``
    topic); empty: nowhere, replicas then see changes at their next registry check."""
    log_level: str = "WARNING"
    """Log level of the processes (the CLI's ``--verbose`` means DEBUG)."""


@lru_cache
def get_settings() -> CoreSettings:
    """Settings read once per process."""
    return CoreSettings()
