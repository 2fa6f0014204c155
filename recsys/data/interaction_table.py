"""The in-memory interaction table every loader produces and every trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from recsys.data.idmap import IdMap
from recsys.errors import EmptyDataError


@dataclass
class Lineage:
    """Where a table came from: input paths, their content hash and row counts."""

    paths: list[str]
    content_sha256: str
    rows_read: int
    format: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "paths": self.paths,
            "content_sha256": self.content_sha256,
            "rows_read": self.rows_read,
            "format": self.format,
        }


@dataclass
class Interactions:
    """Interactions of playlists (or users) with tracks, with dense indices.

    Attributes
    ----------
    rows : ndarray of int32
        Playlist/user index of each interaction.
    items : ndarray of int32
        Track index of each interaction.
    weights : ndarray of float32
        Interaction strength; negative values are known dislikes.
    ts : ndarray of int64 or None
        Optional event time (seconds since the epoch) or position.
    row_ids, item_ids : IdMap
        External ids of rows and tracks.
    track_meta : pyarrow.Table or None
        Optional metadata aligned with ``item_ids`` (``title``, ``artist``, ``duration_ms``).
    row_meta : pyarrow.Table or None
        Optional metadata aligned with ``row_ids``; an event log's holds each listener's
        first and last event time and event count (:mod:`recsys.data.accounts`).
    """

    rows: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    row_ids: IdMap
    item_ids: IdMap
    ts: np.ndarray | None = None
    track_meta: pa.Table | None = None
    lineage: Lineage | None = field(default=None)
    row_meta: pa.Table | None = None

    def __post_init__(self) -> None:
        if len(self.rows) == 0:
            source = self.lineage.paths if self.lineage else "input"
            raise EmptyDataError(f"{source}: no interactions")

    @property
    def n_rows(self) -> int:
        return len(self.row_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.rows)

    def to_csr(self, *, mask: np.ndarray | None = None) -> sp.csr_matrix:
        """Rows x tracks matrix (duplicates summed), optionally of a subset of interactions."""
        rows, items, weights = self.rows, self.items, self.weights
        if mask is not None:
            rows, items, weights = rows[mask], items[mask], weights[mask]
        matrix = sp.csr_matrix(
            (weights.astype(np.float32, copy=False), (rows, items)),
            shape=(self.n_rows, self.n_items),
            dtype=np.float32,
        )
        matrix.sum_duplicates()
        return matrix

    def stats(self) -> dict[str, int]:
        """Row, track and interaction counts."""
        return {"playlists": self.n_rows, "tracks": self.n_items, "interactions": len(self)}
