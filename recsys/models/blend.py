"""Blend of ALS with item-kNN: ``(1 - w) · als / max(als) + w · knn / max(knn)`` per playlist.

ALS generalises across the catalogue (NDCG, recall); item-kNN's direct
co-occurrence is sharper on the very next tracks (R-precision). The blend is exact
and cheap: kNN scores are non-zero only on the neighbours of the playlist's tracks
(the candidates), so among all other tracks the blend ranks as ALS does. The blended
top ``k`` is the best ``k`` of: ALS's top ``k`` with the candidates excluded, and the
candidates with their blended scores. Nothing beyond one ALS top-``k`` is scored over
the whole catalogue.
"""

from __future__ import annotations

import threading
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

    def matrix(self, n_items: int) -> sp.csr_matrix:
        """Rows x tracks indicator of the candidates."""
        data = np.ones(len(self.items), np.float32)
        return sp.csr_matrix((data, self.items, self.indptr), shape=(len(self.indptr) - 1, n_items))


_SCRATCH = threading.local()


def _scratch(n_items: int) -> np.ndarray:
    """This thread's int32 work array of at least ``n_items`` (contents undefined)."""
    buffer: np.ndarray | None = getattr(_SCRATCH, "buffer", None)
    if buffer is None or len(buffer) < n_items:
        buffer = _SCRATCH.buffer = np.empty(n_items, np.int32)
    return buffer


def knn_scores(indptr: np.ndarray, tracks: np.ndarray, similarity: sp.csr_matrix) -> Candidates:
    """kNN scores per playlist (the sums of its tracks' similarity rows), positive ones only.

    Parameters
    ----------
    indptr, tracks : ndarray
        Each playlist's distinct tracks, CSR layout (``tracks[indptr[i]:indptr[i + 1]]``).
    similarity : csr_matrix, items x items

    The same as ``held @ similarity`` for a binary ``held`` matrix, without its cost per
    call: a sparse product clears two catalogue-wide work arrays, where this gathers the
    rows it needs and finds repeated tracks through a per-thread array that is never
    cleared (each track's slot is written before it is read). Sums are in float64;
    excluded tracks are included.
    """
    scratch = _scratch(similarity.shape[1])
    items, scores, counts = [], [], []
    for row in range(len(indptr) - 1):
        seeds = tracks[indptr[row] : indptr[row + 1]]
        starts = similarity.indptr[seeds]
        lengths = similarity.indptr[seeds + 1] - starts
        ends = np.cumsum(lengths)
        positions = np.repeat(starts - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)
        neighbours = similarity.indices[positions]
        at = np.arange(len(neighbours), dtype=np.int32)
        scratch[neighbours] = at  # the last position of each track wins
        owner = scratch[neighbours]  # one position per distinct track: where its sum goes
        sums = np.bincount(owner, weights=similarity.data[positions], minlength=len(neighbours))
        kept = np.flatnonzero((owner == at) & (sums[owner] > 0))
        items.append(neighbours[kept].astype(np.int64))
        scores.append(sums[kept].astype(np.float32))
        counts.append(len(kept))
    return Candidates(
        np.concatenate(([0], np.cumsum(counts, dtype=np.int64))).astype(np.int64),
        np.concatenate(items) if items else np.empty(0, np.int64),
        np.concatenate(scores) if scores else np.empty(0, np.float32),
    )


def knn_candidates(held: sp.csr_matrix, similarity: sp.csr_matrix, excluded: sp.csr_matrix) -> Candidates:
    """kNN scores ``held @ similarity`` per row, without the row's excluded tracks.

    Parameters
    ----------
    held : csr_matrix, rows x items
        Tracks each playlist holds (binary).
    similarity : csr_matrix, items x items
        Item-item neighbour weights.
    excluded : csr_matrix, rows x items
        Non-zero where a track must not be returned.
    """
    scores = (held @ similarity).tocsr()
    if excluded.nnz:
        scores = (scores - scores.multiply(excluded.astype(bool))).tocsr()
    scores.data[scores.data < 0] = 0
    scores.eliminate_zeros()
    scores.sort_indices()
    return Candidates(
        scores.indptr.astype(np.int64), scores.indices.astype(np.int64), scores.data.astype(np.float32)
    )


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
        ALS's top ``k`` over allowed tracks that are not candidates, best first; ``-1`` ids
        are padding.
    candidate_ids, candidate_als, candidate_knn : ndarray
        Tracks with a kNN score, their ALS scores and kNN scores.
    weight : float
        kNN share ``w`` of the blend.

    Both parts are normalised by their maximum over the allowed tracks.
    """
    valid = als_ids >= 0
    als_ids, als_scores = als_ids[valid], als_scores[valid]
    best_als = max(
        float(als_scores[0]) if len(als_scores) else -np.inf, float(candidate_als.max(initial=-np.inf))
    )
    als_peak = max(abs(best_als) if np.isfinite(best_als) else 0.0, EPS)
    knn_peak = max(float(candidate_knn.max(initial=0.0)), EPS)
    ids = np.concatenate((candidate_ids, als_ids))
    scores = np.concatenate(
        (
            (1.0 - weight) * candidate_als / als_peak + weight * candidate_knn / knn_peak,
            (1.0 - weight) * als_scores / als_peak,
        )
    ).astype(np.float32)
    if len(scores) > k:
        head = np.argpartition(-scores, k - 1)[:k]
        ids, scores = ids[head], scores[head]
    order = np.argsort(-scores, kind="stable")
    return ids[order], scores[order]
