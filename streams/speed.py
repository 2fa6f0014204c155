"""The speed layer: a listener's vector and hate set, recomputed on every love, hate or complete.

The vector is the fold-in solve of the production model (the same least-squares step as
one ALS half-iteration) over the listener's loved tracks and recent plays, with hated
tracks as known dislikes; serving uses it, and excludes the hated tracks, until the next
retraining. No retraining is needed for a hate to take effect.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime

import numpy as np
import scipy.sparse as sp

from recsys.artifacts import LoadedModel
from recsys.errors import RecsysError
from recsys.events import UserUpdate
from recsys.feedback import HATE_WEIGHT, LOVE_WEIGHT, PLAY_WEIGHT
from recsys.models.foldin import FoldIn
from recsys.registry import FileRegistry

log = logging.getLogger(__name__)


class SpeedLayer:
    """Fold-in against whatever version is production in ``registry`` (reloaded when it changes)."""

    def __init__(self, registry: FileRegistry) -> None:
        self.registry = registry
        self._model: LoadedModel | None = None
        self._fold_in: FoldIn | None = None
        self._lock = threading.Lock()

    @property
    def version(self) -> str | None:
        return self._model.version if self._model else None

    def refresh(self) -> None:
        """Load the production version if it changed (keep the current one if it fails)."""
        try:
            target = self.registry.production()
            if target is None or target == self.version:
                return
            model = self.registry.load(target)
            params = model.manifest.params
            fold_in = FoldIn(
                model.item_factors,
                regularization=float(params["regularization"]),
                alpha=float(params["alpha"]),
            )
        except RecsysError as exc:
            log.error("speed layer keeps %s: %s", self.version, exc.message)
            return
        with self._lock:
            self._model, self._fold_in = model, fold_in
        log.info("speed layer folds in against %s", target)

    def update_for(
        self,
        user_id: str,
        state: dict[str, list[str]],
        *,
        cause_event_id: uuid.UUID | None = None,
        cause_ts: datetime | None = None,
    ) -> UserUpdate:
        """The user's update: hated and loved tracks, and a vector when a model is loaded."""
        with self._lock:
            model, fold_in = self._model, self._fold_in
        vector = self._vector(model, fold_in, state) if model is not None and fold_in is not None else None
        return UserUpdate(
            user_id=user_id,
            model_version=model.version if model else "none",
            vector=vector,
            hated=state.get("hated", []),
            loved=state.get("loved", []),
            cause_event_id=cause_event_id,
            cause_ts=cause_ts,
        )

    @staticmethod
    def _vector(model: LoadedModel, fold_in: FoldIn, state: dict[str, list[str]]) -> list[float] | None:
        weights: dict[int, float] = {}
        for track in state.get("recent", []):
            index = model.item_ids.get(track)
            if index is not None:
                weights[index] = weights.get(index, 0.0) + PLAY_WEIGHT
        for track in state.get("loved", []):
            index = model.item_ids.get(track)
            if index is not None:
                weights[index] = weights.get(index, 0.0) + LOVE_WEIGHT
        for track in state.get("hated", []):
            index = model.item_ids.get(track)
            if index is not None:
                weights[index] = HATE_WEIGHT
        if not any(w > 0 for w in weights.values()):
            return None
        columns = np.array(sorted(weights), dtype=np.int64)
        row = sp.csr_matrix(
            (np.array([weights[c] for c in columns], np.float32), columns, np.array([0, len(columns)])),
            shape=(1, len(model.item_ids)),
        )
        vector = fold_in.vectors(model.confidence.transform(row))[0]
        return [float(v) for v in vector]
