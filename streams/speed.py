"""The speed layer: a listener's vector and hate set, recomputed on every love, hate or complete.

The vector is the fold-in solve of the production model (the same least-squares step as
one ALS half-iteration) over the listener's loved tracks and recent plays, with hated
tracks as known dislikes; serving uses it, and excludes the hated tracks, until the next
retraining. No retraining is needed for a hate to take effect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.artifacts import LoadedModel
from recsys.errors import RecsysError
from recsys.events import FeedbackEvent, UserUpdate, now
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
            model.item_ids.get("")  # builds the id look-up in this thread, not on the event loop
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

    def updates_for(
        self, changed: Sequence[tuple[str, dict[str, Any], FeedbackEvent | None]]
    ) -> list[UserUpdate]:
        """One update per ``(user, state, cause)``: hated and loved tracks, and a vector when
        a model is loaded (all vectors from one batched fold-in solve)."""
        with self._lock:
            model, fold_in = self._model, self._fold_in
        vectors: list[list[float] | None] = [None] * len(changed)
        if model is not None and fold_in is not None and changed:
            rows, wanted = _confidence_rows(model, [state for _, state, _ in changed])
            if wanted.any():
                solved = fold_in.vectors(rows[wanted])
                for position, vector in zip(np.flatnonzero(wanted), solved, strict=True):
                    vectors[position] = vector.tolist()
        version, made = model.version if model else "none", now()
        return [  # built from validated state: no second validation
            UserUpdate.model_construct(
                user_id=user_id,
                ts=made,
                model_version=version,
                vector=vector,
                hated=state.get("hated", []),
                loved=state.get("loved", []),
                cause_event_id=cause.event_id if cause else None,
                cause_ts=cause.ts if cause else None,
            )
            for (user_id, state, cause), vector in zip(changed, vectors, strict=True)
        ]


def _confidence_rows(
    model: LoadedModel, states: list[dict[str, list[str]]]
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Users x tracks confidences from recent plays, loves and hates; and which rows have a
    positive entry (a vector can only be folded in from something the user liked)."""
    indptr: list[int] = [0]
    indices: list[int] = []
    data: list[float] = []
    wanted = np.zeros(len(states), dtype=bool)
    known = model.item_ids.get
    for row, state in enumerate(states):
        weights: dict[int, float] = {}
        for tracks, weight in ((state.get("recent", ()), PLAY_WEIGHT), (state.get("loved", ()), LOVE_WEIGHT)):
            for track in tracks:
                index = known(track)
                if index is not None:
                    weights[index] = weights.get(index, 0.0) + weight
        for track in state.get("hated", ()):
            index = known(track)
            if index is not None:
                weights[index] = HATE_WEIGHT
        wanted[row] = any(w > 0 for w in weights.values())
        columns = sorted(weights)
        indices.extend(columns)
        data.extend(weights[c] for c in columns)
        indptr.append(len(indices))
    matrix = sp.csr_matrix(
        (np.array(data, np.float32), np.array(indices, np.int64), np.array(indptr)),
        shape=(len(states), len(model.item_ids)),
    )
    return model.confidence.transform(matrix), wanted
