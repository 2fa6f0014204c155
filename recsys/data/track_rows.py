"""Each playlist's distinct tracks as index rows: a light binary rows x tracks matrix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrackRows:
    """Sorted distinct track indices per row, CSR layout: row ``i`` is ``indices[indptr[i]:indptr[i + 1]]``.

    What a request needs of a scipy CSR matrix, for a handful of rows, without the cost of
    building one (tens of microseconds each, several per request).
    """

    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[np.ndarray]) -> TrackRows:
        """Rows from lists of track indices (repeats counted once)."""
        distinct = [np.unique(np.asarray(r, dtype=np.int64)) for r in rows]
        indptr = np.zeros(len(distinct) + 1, np.int64)
        np.cumsum([len(d) for d in distinct], out=indptr[1:])
        indices = np.concatenate(distinct) if distinct else np.empty(0, np.int64)
        return cls(indptr, indices)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row(self, i: int) -> np.ndarray:
        """Row ``i``'s track indices."""
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    def union(self, other: TrackRows) -> TrackRows:
        """Row by row, the tracks in either."""
        return TrackRows.of([np.concatenate((self.row(i), other.row(i))) for i in range(len(self))])

    def keep(self, mask: np.ndarray) -> TrackRows:
        """The entries where ``mask`` (one flag per entry) is true."""
        rows = np.repeat(np.arange(len(self)), np.diff(self.indptr))[mask]
        indptr = np.zeros(len(self) + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=len(self)), out=indptr[1:])
        return TrackRows(indptr, self.indices[mask])
