"""Baselines every trained model is compared with on the same split: most-popular and item-kNN."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.models.base import drop_filtered, pad

ITEM_KNN_NEIGHBOURS = 200
BM25_K1, BM25_B = 3.0, 0.5
"""BM25 weighting of the item-kNN: the strongest of a grid on yes_small and AotM (benchmarks/README.md)."""


class MostPopular:
    """Tracks ranked by how many rows hold them (positively)."""

    name = "most_popular"

    def __init__(self) -> None:
        self.ranking: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        return self.ranking is not None

    def fit(self, matrix: sp.csr_matrix) -> None:
        counts = np.bincount(matrix.indices[matrix.data > 0], minlength=matrix.shape[1])
        self.ranking = np.argsort(-counts, kind="stable")

    def recommend(self, rows: np.ndarray, matrix: sp.csr_matrix, k: int) -> np.ndarray:
        if self.ranking is None:
            raise RuntimeError("fit the model first")
        sub = matrix[rows]
        width = min(len(self.ranking), k + int(np.diff(sub.indptr).max(initial=0)))
        candidates = np.broadcast_to(self.ranking[:width], (len(rows), width))
        seen = sub[:, self.ranking[:width]].toarray() != 0
        out = np.full((len(rows), k), -1, dtype=np.int64)
        for i in range(len(rows)):
            kept = candidates[i][~seen[i]][:k]
            out[i, : len(kept)] = kept
        return out


class ItemKNN:
    """Item-item nearest neighbours on BM25-weighted co-occurrence (implicit's BM25Recommender)."""

    name = "item_knn"

    def __init__(self, neighbours: int = ITEM_KNN_NEIGHBOURS, k1: float = BM25_K1, b: float = BM25_B) -> None:
        self.neighbours, self.k1, self.b = neighbours, k1, b
        self._model: Any = None

    def fit(self, matrix: sp.csr_matrix) -> None:
        from implicit.nearest_neighbours import ItemItemRecommender, bm25_weight

        # what BM25Recommender.fit does, but handing implicit CSR rather than COO
        positive = matrix.multiply(matrix > 0).tocsr()
        weighted = bm25_weight(positive.T, K1=self.k1, B=self.b).T.tocsr()
        self._model = ItemItemRecommender(K=self.neighbours)
        self._model.fit(weighted, show_progress=False)

    @property
    def fitted(self) -> bool:
        return self._model is not None

    @property
    def config(self) -> tuple[int, float, float]:
        """(neighbours, BM25 K1, BM25 B)."""
        return self.neighbours, self.k1, self.b

    @property
    def similarity(self) -> sp.csr_matrix:
        """Item x item neighbour weights (each row keeps its ``neighbours`` best)."""
        if self._model is None:
            raise RuntimeError("fit the model first")
        similarity: sp.csr_matrix = self._model.similarity
        return similarity

    def recommend(self, rows: np.ndarray, matrix: sp.csr_matrix, k: int) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("fit the model first")
        positive = matrix[rows]
        positive = positive.multiply(positive > 0).tocsr()
        with threadpool_limits(1, "blas"):
            ids, scores = self._model.recommend(
                np.arange(len(rows)), positive, N=k, filter_already_liked_items=True
            )
        ids = np.where(np.asarray(scores) == 0, -1, drop_filtered(ids, scores))
        return pad(ids, k)
