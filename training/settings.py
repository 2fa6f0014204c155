"""Settings of the training process, from ``RECSYS_*`` environment variables (see deploy/.env.example)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from recsys.settings import RecsysSettings
from recsys.trust.policy import TrustParams
from training.watch import GROUP_ID


class TrainingSettings(RecsysSettings):
    """What ``recsys train`` reads besides the shared settings (registry, broker, ...)."""

    model_config = SettingsConfigDict(env_nested_delimiter="__")

    trainer_group: str = GROUP_ID
    """Consumer group of the trainers (``recsys train --watch --group``): one retrain
    request goes to one of them."""
    trust: TrustParams = Field(default_factory=TrustParams)
    """Account trust of listeners' feedback (``RECSYS_TRUST__ENABLED``,
    ``RECSYS_TRUST__MIN_AGE_DAYS``, ``RECSYS_TRUST__FULL_AGE_DAYS``)."""


@lru_cache
def get_settings() -> TrainingSettings:
    """Settings read once per process."""
    return TrainingSettings()
