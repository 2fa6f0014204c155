"""The impression log: every recommendation list served, so feedback can be credited to its version.

Backends are chosen by URL: ``memory://`` (bounded, in process; tests), ``file:///path.jsonl``
(one JSON line per list, appended). The Kafka topic ``recommendations-served`` is a backend of
the serving process, behind the same interface.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from recsys.errors import ConfigurationError

MEMORY_CAPACITY = 10_000


class Impression(BaseModel):
    """One served list of recommendations."""

    request_id: str
    user_id: str
    playlist_id: str | None = None
    model_version: str
    variant: str
    experiment: str | None = None
    tracks: list[str]
    track_versions: list[str] | None = None
    """Per track, the version that contributed it, for a list merged from two versions
    (variant ``NAME:interleave``); ``None`` when ``model_version`` produced every track."""
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))


class ImpressionLog(Protocol):
    """Where served lists go."""

    def emit(self, impression: Impression) -> None: ...

    def close(self) -> None: ...


class MemoryImpressionLog:
    """The last :data:`MEMORY_CAPACITY` impressions, in memory."""

    def __init__(self, capacity: int = MEMORY_CAPACITY) -> None:
        self.items: deque[Impression] = deque(maxlen=capacity)

    def emit(self, impression: Impression) -> None:
        self.items.append(impression)

    def close(self) -> None:
        return None


class FileImpressionLog:
    """Appends one JSON line per impression to a file (safe across threads)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def emit(self, impression: Impression) -> None:
        line = impression.model_dump_json() + "\n"
        with self._lock:
            self._fh.write(line)

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def open_log(url: str) -> ImpressionLog:
    """An impression log for ``memory://`` or ``file:///path``."""
    if url == "memory://":
        return MemoryImpressionLog()
    if url.startswith("file://"):
        return FileImpressionLog(Path(url.removeprefix("file://")))
    raise ConfigurationError(f"impression log {url!r}: expected memory:// or file:///path")
