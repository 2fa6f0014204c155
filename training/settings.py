"""Settings of the training process, from ``RECSYS_*`` environment variables (see deploy/.env.example)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys.trust.policy import TrustParams


class TrainingSettings(BaseSettings):
    """What ``recsys train`` reads besides its options."""

    model_config = SettingsConfigDict(
        env_prefix="RECSYS_", env_file=".env", extra="ignore", env_nested_delimiter="__"
    )

    trust: TrustParams = Field(default_factory=TrustParams)
    """Account trust of listeners' feedback (``RECSYS_TRUST__ENABLED``,
    ``RECSYS_TRUST__MIN_AGE_DAYS``, ``RECSYS_TRUST__FULL_AGE_DAYS``)."""


@lru_cache
def get_settings() -> TrainingSettings:
    """Settings read once per process."""
    return TrainingSettings()
