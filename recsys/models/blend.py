"""Blend of ALS with item-kNN: ``(1 - w) · als / max(als) + w · knn / max(knn)`` per playlist.

ALS generalises across the catalogue (NDCG, recall); item-kNN's direct
co-occurrence is sharper on the very next tracks (R-precision). The blend is exact
and cheap: kNN scores are non-zero only on the neighbours of the playlist's tracks
(the candidates), so among all other tracks the blend ranks as ALS does. The blended
top ``k`` is the best ``k`` of: ALS's top ``k`` with the candidates excluded, and the
candidates with their blended scores. Nothing beyond one ALS top-``k`` is scored over
the whole catalogue.

:func:`blend_scores` defines the blended score and :func:`top_k` the cut to the best
``k``; every numpy scorer uses both (evaluation's :func:`merge_row`, serving's reference
:func:`recsys.scoring.topk.numpy_topk` and its approximate :mod:`recsys.scoring.ann`), and
the ONNX scoring graph (:mod:`recsys.scoring.onnx_graph`) computes the same score with
:data:`EPS` from here. :func:`knn_scores` defines the kNN candidates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.models.base import drop_filtered

EPS = 1e-12
"""Floor of the blend's two normalisers (and of a user vector's magnitude in the scoring graph)."""

AlsTopK = Callable[[sp.csr_matrix, int], tuple[np.ndarray, np.ndarray]]
"""ALS's best ``n`` tracks per row, ids and scores, leaving out the tracks marked in a rows x
tracks matrix (implicit's ``recommend(rows, hidden, N=n, filter_already_liked_items=True)``)."""


@dataclass
class Candidates:
    """Per row: tracks with a positive kNN score, and those scores, CSR layout."""

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
    """kNN scores ``held @ similarity`` per row (:func:`knn_scores`), without the row's excluded tracks.

    Parameters
    ----------
    held : csr_matrix, rows x items
        Tracks each playlist holds (the values are not used).
    similarity : csr_matrix, items x items
        Item-item neighbour weights.
    excluded : csr_matrix, rows x items
        Non-zero where a track must not be returned.
    """
    scores = knn_scores(held.indptr, held.indices, similarity)
    rows = len(scores.indptr) - 1
    hidden = excluded.tocsr().astype(bool)
    hidden.eliminate_zeros()
    n = similarity.shape[1]
    owner = np.repeat(np.arange(rows, dtype=np.int64), np.diff(scores.indptr))
    hidden_owner = np.repeat(np.arange(hidden.shape[0], dtype=np.int64), np.diff(hidden.indptr))
    keys = owner * n + scores.items
    kept = np.flatnonzero(~np.isin(keys, hidden_owner * n + hidden.indices))
    kept = kept[np.argsort(keys[kept], kind="stable")]  # each row's tracks in ascending order
    indptr = np.zeros(rows + 1, np.int64)
    np.cumsum(np.bincount(owner[kept], minlength=rows), out=indptr[1:])
    return Candidates(indptr, scores.items[kept], scores.scores[kept])


def blend_scores(
    als: np.ndarray, hidden: np.ndarray, weight: float, knn: np.ndarray | None = None
) -> np.ndarray:
    """Blended score of every track of every row, ``-inf`` where hidden.

    Parameters
    ----------
    als : ndarray of float32, shape (rows, tracks)
        ALS scores (user vector · item factors).
    hidden : ndarray of bool, shape (rows, tracks)
        Tracks that are never returned (excluded, or padding).
    weight : float
        kNN share ``w`` of the blend; 0 scores by the raw ALS dot product.
    knn : ndarray of float32, shape (rows, tracks), optional
        Raw kNN scores, 0 for tracks that are not candidates; none: no track has one.

    Returns
    -------
    ndarray of float32
        ``(1 - w) · als / |max als| + w · knn / max knn``, both maxima over the row's tracks
        that are not hidden (floored at :data:`EPS`; an ALS maximum is 1 when every track is
        hidden). The ONNX scoring graph computes the same with the same operations.
    """
    scores = als
    if weight > 0:
        peak = np.where(hidden, -np.inf, als).max(axis=1, keepdims=True, initial=-np.inf)
        peak = np.where(np.isfinite(peak), peak, 1.0)
        scores = als * ((1.0 - weight) / np.maximum(np.abs(peak), EPS))
        if knn is not None:
            knn = np.where(hidden, 0.0, knn)
            knn /= np.maximum(knn.max(axis=1, keepdims=True, initial=0.0), EPS)
            scores = scores + weight * knn
    blended: np.ndarray = np.where(hidden, -np.inf, scores).astype(np.float32)
    return blended


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions and scores of the best ``k`` of each row, best first.

    Parameters
    ----------
    scores : ndarray, shape (rows, n)
    k : int
        At most ``n`` are returned.

    Tracks of equal score come in no particular order.
    """
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.empty((len(scores), 0), np.int64), np.empty((len(scores), 0), scores.dtype)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


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
    """Blended top ``k`` of one playlist (:func:`blend_scores`, :func:`top_k`).

    Parameters
    ----------
    als_ids, als_scores : ndarray
        ALS's top ``k`` over allowed tracks that are not candidates, best first; ``-1`` ids
        are padding.
    candidate_ids, candidate_als, candidate_knn : ndarray
        Tracks with a kNN score, their ALS scores and kNN scores.
    weight : float
        kNN share ``w`` of the blend.

    Both parts are normalised by their maximum over the allowed tracks: for ALS the best
    of the candidates and of ALS's top ``k``, which holds the best of all other tracks.
    """
    valid = als_ids >= 0
    ids = np.concatenate((candidate_ids, als_ids[valid])).astype(np.int64)
    als = np.concatenate((candidate_als, als_scores[valid])).astype(np.float32)[None, :]
    knn = np.zeros(als.shape, np.float32)
    knn[0, : len(candidate_knn)] = candidate_knn
    positions, scores = top_k(blend_scores(als, np.zeros(als.shape, bool), weight, knn), k)
    return ids[positions[0]], scores[0]


def blended_top_k(
    users: np.ndarray,
    item_factors: np.ndarray,
    candidates: Candidates,
    excluded: sp.csr_matrix,
    *,
    weight: float,
    k: int,
    als_top_k: AlsTopK,
) -> tuple[np.ndarray, np.ndarray]:
    """Blended top ``k`` of each row from one ALS top-``k`` and the row's kNN candidates.

    Parameters
    ----------
    users : ndarray, shape (rows, factors)
        The rows' vectors.
    item_factors : ndarray, shape (tracks, factors)
    candidates : Candidates
        Each row's kNN candidates, its excluded tracks removed (:func:`knn_candidates`).
    excluded : csr_matrix, rows x tracks
        Non-zero where a track must not be returned.
    weight : float
        kNN share ``w`` of the blend.
    k : int
    als_top_k : AlsTopK
        ALS's top tracks of each row, given the tracks to leave out.

    Returns
    -------
    ids, scores : ndarray, shape (rows, k)
        Best first; ``-1`` ids and ``-inf`` scores pad rows with fewer than ``k`` tracks.
    """
    n_items = item_factors.shape[0]
    hidden = (excluded + candidates.matrix(n_items)).tocsr()
    found, found_scores = als_top_k(hidden, min(k, n_items))
    als_ids = drop_filtered(found, found_scores)
    ids = np.full((len(users), k), -1, dtype=np.int64)
    scores = np.full((len(users), k), -np.inf, dtype=np.float32)
    for i in range(len(users)):
        cand, knn = candidates.row(i)
        row_ids, row_scores = merge_row(
            als_ids=np.asarray(als_ids[i]),
            als_scores=np.asarray(found_scores[i]),
            candidate_ids=cand,
            candidate_als=item_factors[cand] @ users[i],
            candidate_knn=knn,
            weight=weight,
            k=k,
        )
        ids[i, : len(row_ids)], scores[i, : len(row_scores)] = row_ids, row_scores
    return ids, scores
