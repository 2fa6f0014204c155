"""The model the service answers with, swapped atomically when a new one is loaded and verified."""

from __future__ import annotations

import logging
import threading

from recsys.errors import RecsysError
from recsys.recommender import VersionRecommender
from recsys.registry import FileRegistry

log = logging.getLogger(__name__)


class ModelHolder:
    """Holds the current recommender; a failed load leaves the previous one serving."""

    def __init__(self, registry: FileRegistry, *, prefer_gpu: bool = False) -> None:
        self.registry = registry
        self.prefer_gpu = prefer_gpu
        self._current: VersionRecommender | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> VersionRecommender | None:
        return self._current

    def load(self, ref: str) -> VersionRecommender:
        """Load and verify ``ref``, then switch to it; raises (and keeps the old model) on failure."""
        with self._lock:
            recommender = VersionRecommender(self.registry.load(ref), prefer_gpu=self.prefer_gpu)
            previous = self._current.version if self._current else None
            self._current = recommender
            log.info("model %s serving (was %s) on %s", recommender.version, previous, recommender.provider)
            return recommender

    def try_load(self, ref: str) -> bool:
        """Like :meth:`load`, but logs the failure instead of raising (used at start-up)."""
        try:
            self.load(ref)
        except RecsysError as exc:
            log.error("model %s not loaded: %s", ref, exc.message)
            return False
        return True
