"""Settings of every process, from ``RECSYS_*`` environment variables or a ``.env`` file.

:class:`RecsysSettings` holds what more than one process reads (the registry, the Kafka
broker, where registry changes are announced, the log level). Each process's settings
(``serving.settings``, ``streams.settings``, ``training.settings``) derive from it and add
only their own fields, so every variable is declared once. Command-line options do not read
the environment themselves: they default to ``None`` and :func:`with_overrides` puts the
ones given in place of the settings' values.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys.errors import ConfigurationError

DEFAULT_REGISTRY = Path("models")
"""The registry folder when nothing else is set."""
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
"""The broker when nothing else is set: the local one of ``recsys kafka start``."""
ENV_PREFIX = "RECSYS_"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""How every process formats its log lines."""


class RecsysSettings(BaseSettings):
    """What every process shares; the base of each process's settings."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    registry: Path = DEFAULT_REGISTRY
    """Model registry folder (``file://`` registries only, for now)."""
    kafka_bootstrap: str = DEFAULT_KAFKA_BOOTSTRAP
    """``host:port`` (comma-separated for several) of the Kafka broker: the stream worker's,
    the trainer's (``recsys train --watch``) and the one the API follows ``model-events`` and
    ``user-updates`` on."""
    model_events: str = ""
    """Where registry changes are announced (``kafka://host:port``: the ``model-events``
    topic); empty: nowhere, replicas then see changes at their next registry check."""
    log_level: str = "WARNING"
    """Log level of the processes (the CLI's ``--verbose`` means DEBUG)."""

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of a field (``registry`` → ``RECSYS_REGISTRY``)."""
        if field not in cls.model_fields:
            raise KeyError(f"{cls.__name__} has no setting {field!r}")
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


SettingsT = TypeVar("SettingsT", bound=RecsysSettings)


def with_overrides(settings: SettingsT, **options: Any) -> SettingsT:
    """``settings`` with the command-line options that were given in place of their values.

    Parameters
    ----------
    settings : RecsysSettings
        Settings read from the environment and ``.env``.
    **options
        Field name to option value; ``None`` means the option was not given.

    Returns
    -------
    RecsysSettings
        A validated copy of the same class; ``settings`` itself is left as it was.

    Raises
    ------
    KeyError
        An option names no field of the settings.
    ConfigurationError
        A given value is not valid for its field.
    """
    given = {name: value for name, value in options.items() if value is not None}
    for name in given:
        type(settings).env_name(name)  # an unknown name is a mistake of the caller
    if not given:
        return settings
    try:  # model_validate, not the constructor: the environment is not read a second time
        return type(settings).model_validate(dict(settings) | given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigurationError(f"invalid option: {problems}") from exc


@lru_cache
def get_settings() -> RecsysSettings:
    """The shared settings, read once per process."""
    return RecsysSettings()
