"""The contract every recommender meets, so evaluation treats them alike."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import scipy.sparse as sp


class Recommender(Protocol):
    """Fit on a rows x tracks matrix, then rank tracks for some of its rows."""

    @property
    def name(self) -> str:
        """Key of the method's metrics in evaluation reports."""
        ...

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        ...

    def fit(self, matrix: sp.csr_matrix) -> None:
        """Learn from interactions (rows = playlists/users, columns = tracks)."""
        ...

    def recommend(self, rows: np.ndarray, matrix: sp.csr_matrix, k: int) -> np.ndarray:
        """Top ``k`` track indices per row, excluding the row's own tracks; ``-1`` padded."""
        ...


FILTERED_SCORE = -1e30
"""implicit returns filtered-out items last, scored -FLT_MAX; anything this low is not a recommendation."""


def drop_filtered(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``ids`` with ``-1`` where implicit filtered the item (or found none)."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.where((ids < 0) | ~(np.asarray(scores) > FILTERED_SCORE), -1, ids)


def pad(ids: np.ndarray, k: int) -> np.ndarray:
    """Right-pad a ``[rows, <=k]`` id array with ``-1`` to width ``k``."""
    if ids.shape[1] >= k:
        return ids[:, :k]
    return np.pad(ids, ((0, 0), (0, k - ids.shape[1])), constant_values=-1)
