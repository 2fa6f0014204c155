"""Fold-in: the vector of a playlist or listener from the item factors, without retraining.

It solves the same least-squares problem as one ALS half-step (implicit's
``recalculate_user``): ``(YᵀY + λI + Σ (cᵢ - 1) yᵢyᵢᵀ) x = Σ_{cᵢ>0} cᵢ yᵢ`` with
``cᵢ = alpha * confidence``; a negative confidence (dislike) adds weight with
preference 0. :meth:`FoldIn.row_vectors` goes from interaction weights as training
reads them (:mod:`recsys.events.weights`) to vectors: the model's confidence
weighting, then the solve.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

from recsys.models.confidence import Confidence

GRAM_ROWS = 1 << 16


@functools.cache
def _blas() -> ThreadpoolController:
    """Inspecting the loaded libraries is slow; do it once per process."""
    return ThreadpoolController()


def gram(item_factors: np.ndarray) -> np.ndarray:
    """``YᵀY`` in float64, in slices on one BLAS thread.

    A server computes it while it answers requests (a new version loading); multi-threaded
    BLAS would take every core for the duration.
    """
    factors = item_factors.shape[1]
    out = np.zeros((factors, factors))
    with _blas().limit(limits=1, user_api="blas"):
        for start in range(0, len(item_factors), GRAM_ROWS):
            part = item_factors[start : start + GRAM_ROWS].astype(np.float64)
            out += part.T @ part
    return out


class FoldIn:
    """Batch fold-in for a fixed set of item factors.

    Parameters
    ----------
    item_factors : ndarray, shape (items, factors)
    regularization : float
    alpha : float
        Scale applied to confidences, as in training.
    """

    def __init__(self, item_factors: np.ndarray, *, regularization: float, alpha: float) -> None:
        self.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.alpha = alpha
        factors = item_factors.shape[1]
        self._base = gram(self.item_factors) + regularization * np.eye(factors)

    def row_vectors(self, weights: sp.csr_matrix, confidence: Confidence) -> np.ndarray:
        """One vector per row of a rows x items matrix of interaction weights.

        Parameters
        ----------
        weights : csr_matrix
            Interaction weights as training reads them (negative: dislike).
        confidence : Confidence
            The model's weighting, applied to each row as in training.

        Returns
        -------
        ndarray of float32, shape (rows, factors)
            Entries whose confidence is 0 count as absent, as in training's matrix.
        """
        confidences = confidence.transform(weights)
        confidences.eliminate_zeros()
        confidences.sort_indices()
        return self.vectors(confidences)

    def vectors(self, confidences: sp.csr_matrix) -> np.ndarray:
        """One vector per row of a rows x items confidence matrix (before ``alpha``)."""
        return self.solve(confidences.indptr, confidences.indices, confidences.data)

    def solve(self, indptr: np.ndarray, indices: np.ndarray, confidences: np.ndarray) -> np.ndarray:
        """One vector per CSR row of confidences (``indptr``, ``indices``, values before ``alpha``)."""
        n, factors = len(indptr) - 1, self.item_factors.shape[1]
        lhs = np.broadcast_to(self._base, (n, factors, factors)).copy()
        rhs = np.zeros((n, factors))
        for row in range(n):
            start, stop = indptr[row], indptr[row + 1]
            if start == stop:
                continue
            y = self.item_factors[indices[start:stop]].astype(np.float64)
            c = self.alpha * confidences[start:stop].astype(np.float64)
            magnitude = np.abs(c)
            lhs[row] += (y * (magnitude - 1.0)[:, None]).T @ y
            rhs[row] = (np.where(c > 0, c, 0.0)[:, None] * y).sum(axis=0)
        return np.linalg.solve(lhs, rhs[..., None])[..., 0].astype(np.float32)
