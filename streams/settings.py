"""Settings of the stream processors, from ``RECSYS_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from recsys.settings import RecsysSettings


class StreamSettings(RecsysSettings):
    """What the stream worker needs besides the shared settings (broker, registry, ...).

    The speed layer folds feedback in against the production version of ``registry``.
    """

    app_id: str = "recsys-streams"
    """Consumer group and prefix of the worker's internal topics."""
    store: str = "rocksdb://"
    """Table storage: rocksdb:// (durable local state) or memory://."""
    data_dir: Path = Path("stream-data")
    """Folder of the worker's local state."""
    session_timeout_s: float = 60.0
    """How long the group waits for a worker that stopped answering (killed, or cut off from
    the broker) before its partitions go to another or to its restart: shorter fails over
    sooner, but a worker stalled for longer than this loses its partitions."""
    model_check_s: float = 5.0
    """How often the speed layer looks for a newly promoted version."""
    web_port: int = 6066
    """The worker's web views (``/stats/``, ``/users/{id}/``)."""
    web_bind: str = "127.0.0.1"
    """Interface of the web views (``0.0.0.0`` in a container, for the API's dashboard and
    the rollout controller)."""
    retrain_min_events: int = 10_000
    """Ask for a retraining once this many feedback events arrived past the latest cut."""
    retrain_max_age_s: float = 86_400.0
    """... or once the oldest of them is this old."""
    retrain_check_s: float = 10.0
    """How often the leader checks (0: never; run the trigger elsewhere)."""
