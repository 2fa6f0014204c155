"""The speed layer: a listener's vector and hate set, recomputed on every love, hate or complete.

The vector is the fold-in of the production model (:meth:`recsys.models.foldin.FoldIn.row_vectors`,
the same least-squares step as one ALS half-iteration) over the interaction weights of the
listener's feedback, weighted as training weights it (:func:`recsys.events.weights.track_weights`):
the plays, completes and skips the listener's state keeps (``recent``), a love for each loved
track and a hate for each hated one. For the same events it is the vector a batch fold-in
gives. Serving uses it, and excludes the hated tracks, until the next retraining. No
retraining is needed for a hate to take effect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recsys.errors import RecsysError
from recsys.events.schemas import FeedbackEvent, UserUpdate, now
from recsys.events.weights import Feedback, FeedbackType, from_record, track_weights
from recsys.models.foldin import FoldIn
from recsys.registry.artifacts import LoadedModel

log = logging.getLogger(__name__)


class ModelSource(Protocol):
    """Where the production model comes from (a :class:`~recsys.registry.store.FileRegistry`)."""

    def production(self) -> str | None: ...

    def load(self, ref: str) -> LoadedModel: ...


class SpeedLayer:
    """Fold-in against whatever version is production in ``registry`` (reloaded when it changes)."""

    def __init__(self, registry: ModelSource) -> None:
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
            rows, wanted = weight_rows(model, [state for _, state, _ in changed])
            if wanted.any():
                solved = fold_in.row_vectors(rows[wanted], model.confidence)
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


def feedback_of(state: dict[str, Any]) -> list[Feedback]:
    """The events a listener's state stands for: the plays, completes and skips it keeps, in
    order, then a love for each loved track and a hate for each hated one."""
    events = [from_record(record) for record in state.get("recent", ())]
    events += [Feedback(track, FeedbackType.LOVE) for track in state.get("loved", ())]
    events += [Feedback(track, FeedbackType.HATE) for track in state.get("hated", ())]
    return events


def weight_rows(model: LoadedModel, states: Sequence[dict[str, Any]]) -> tuple[sp.csr_matrix, np.ndarray]:
    """Users x tracks interaction weights of listeners' states, and which rows have a positive one.

    Parameters
    ----------
    model : LoadedModel
        Its catalogue; feedback on other tracks is left out, as training leaves it out.
    states : sequence of dict
        ``user-state`` values (``recent``, ``loved``, ``hated``).

    Returns
    -------
    (csr_matrix, ndarray of bool)
        The weights (before the model's confidence weighting), and per row whether it has a
        positive entry (a vector can only be folded in from something the user liked).
    """
    indptr: list[int] = [0]
    indices: list[int] = []
    data: list[float] = []
    wanted = np.zeros(len(states), dtype=bool)
    known = model.item_ids.get
    for row, by_track in enumerate(track_weights(feedback_of(state) for state in states)):
        weights: dict[int, float] = {}
        for track, weight in by_track.items():
            index = known(track)
            if index is not None:
                weights[index] = weight
        wanted[row] = any(w > 0 for w in weights.values())
        columns = sorted(weights)
        indices.extend(columns)
        data.extend(weights[c] for c in columns)
        indptr.append(len(indices))
    matrix = sp.csr_matrix(
        (np.array(data, np.float32), np.array(indices, np.int64), np.array(indptr)),
        shape=(len(states), len(model.item_ids)),
    )
    return matrix, wanted
