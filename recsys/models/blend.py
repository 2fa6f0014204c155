"""Blend of ALS with item-kNN: ``(1 - w) · als / max(als) + w · knn / max(knn)`` per playlist.

ALS generalises across the catalogue (NDCG, recall); item-kNN's direct
co-occurrence is sharper on the very next tracks (R-precision). The blend is exact
and cheap: kNN scores are non-zero only on the neighbours of the playlist's tracks
(the candidates), so the best non-candidates are the head of the plain ALS ranking.
Given ALS's top ``k + |candidates|`` and the ALS scores of the candidates, the
blended top ``k`` needs no scoring of the whole catalogue beyond what ALS does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

EPS = 1e-12


@dataclass
class Candidates:
    """Per row: tracks with a kNN score (excluded tracks removed), CSR layout."""

    indptr: np.ndarray
    items: np.ndarray
    scores: np.ndarray

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.items[self.indptr[i] : self.indptr[i + 1]], self.scores[
            self.indptr[i] : self.indptr[i + 1]
        ]

    @property
    def widest(self) -> int:
        return int(np.diff(self.indptr).max(initial=0))


def knn_candidates(held: sp.csr_matrix, similarity: sp.csr_matrix, excluded: list[np.ndarray]) -> Candidates:
    """kNN scores ``held @ similarity`` per row, without the row's excluded tracks.

    Parameters
    ----------
    held : csr_matrix, rows x items
        Tracks each playlist holds (binary).
    similarity : csr_matrix, items x items
        Item-item neighbour weights.
    excluded : list of ndarray
        Per row, tracks that must not be returned.
    """
    scores = (held @ similarity).tocsr()
    scores.sort_indices()
    keep = np.ones(scores.nnz, dtype=bool)
    for i, ex in enumerate(excluded):
        start, stop = scores.indptr[i], scores.indptr[i + 1]
        if len(ex) and stop > start:
            keep[start:stop] = ~np.isin(scores.indices[start:stop], ex)
    keep &= scores.data > 0
    row_of = np.repeat(np.arange(scores.shape[0]), np.diff(scores.indptr))
    indptr = np.concatenate(([0], np.cumsum(np.bincount(row_of[keep], minlength=scores.shape[0]))))
    return Candidates(indptr, scores.indices[keep].astype(np.int64), scores.data[keep].astype(np.float32))


def merge_row(
    *,
    als_ids: np.ndarray,
    als_scores: np.ndarray,
    candidate_ids: np.ndarray,
    candidate_als: np.ndarray,
    candidate_knn: np.ndarray,
    weight: float,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Blended top ``k`` of one playlist.

    Parameters
    ----------
    als_ids, als_scores : ndarray
        ALS ranking over allowed tracks, best first, at least ``k + len(candidate_ids)`` long
        (or the whole allowed catalogue); ``-1`` ids are padding.
    candidate_ids, candidate_als, candidate_knn : ndarray
        Tracks with a kNN score, their ALS scores and kNN scores.
    weight : float
        kNN share ``w`` of the blend.
    """
    valid = als_ids >= 0
    als_ids, als_scores = als_ids[valid], als_scores[valid]
    als_peak = max(float(np.abs(als_scores[0])) if len(als_scores) else 0.0, EPS)
    knn_peak = max(float(candidate_knn.max()) if len(candidate_knn) else 0.0, EPS)
    others = ~np.isin(als_ids, candidate_ids)
    ids = np.concatenate((candidate_ids, als_ids[others]))
    scores = np.concatenate(
        (
            (1.0 - weight) * candidate_als / als_peak + weight * candidate_knn / knn_peak,
            (1.0 - weight) * als_scores[others] / als_peak,
        )
    ).astype(np.float32)
    top = np.argsort(-scores, kind="stable")[:k]
    return ids[top], scores[top]
