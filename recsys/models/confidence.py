"""Confidence weighting of the interaction matrix before ALS (and in every fold-in).

``bm25`` is implicit's ``bm25_weight`` (Okapi BM25 of each row's entries) with the
item IDF and the mean row length kept, so a playlist folded in at serving time is
weighted exactly as the training rows were. Negative entries (dislikes) keep their
sign and are weighted by their magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import scipy.sparse as sp


class Weighting(StrEnum):
    """How raw interaction weights become ALS confidences (before ``alpha``)."""

    LINEAR = "linear"
    BM25 = "bm25"


@dataclass
class Confidence:
    """A fitted weighting: kind, BM25 parameters, item IDF and mean row length."""

    kind: Weighting
    k1: float = 100.0
    b: float = 0.8
    idf: np.ndarray | None = None
    mean_length: float = 1.0

    @classmethod
    def fit(cls, matrix: sp.csr_matrix, *, kind: Weighting, k1: float = 100.0, b: float = 0.8) -> Confidence:
        """Learn IDF and mean row length from the training matrix."""
        if kind is Weighting.LINEAR:
            return cls(kind)
        magnitude = abs(matrix)
        df = np.bincount(magnitude.indices, minlength=matrix.shape[1])
        idf = (np.log(float(matrix.shape[0])) - np.log1p(df)).astype(np.float32)
        mean_length = float(np.asarray(magnitude.sum(axis=1)).mean()) or 1.0
        return cls(kind, k1, b, idf, mean_length)

    def transform(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        """Weighted copy of a rows x tracks matrix (same sparsity)."""
        out = matrix.astype(np.float32, copy=True)
        if self.kind is Weighting.LINEAR or self.idf is None:
            return out
        out.data = self.weights(out.indptr, out.indices, out.data)
        out.eliminate_zeros()
        return out

    def weights(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray) -> np.ndarray:
        """The weighted values of CSR rows (``indptr``, ``indices``, ``data``), as float32."""
        values = np.asarray(data, dtype=np.float32)
        if self.kind is Weighting.LINEAR or self.idf is None:
            return values.copy()
        magnitude = np.abs(values)
        lengths = np.diff(indptr)
        rows = np.repeat(np.arange(len(lengths)), lengths)
        row_sums = np.bincount(rows, weights=magnitude, minlength=len(lengths)).astype(np.float32)
        length_norm = (1.0 - self.b) + self.b * row_sums / self.mean_length
        weighted = magnitude * (self.k1 + 1.0) / (self.k1 * length_norm[rows] + magnitude) * self.idf[indices]
        out: np.ndarray = (np.sign(values) * weighted).astype(np.float32)
        return out

    def save(self, path: Path) -> None:
        """Write to ``.npz``."""
        idf = self.idf if self.idf is not None else np.zeros(0, np.float32)
        np.savez(path, kind=self.kind.value, k1=self.k1, b=self.b, idf=idf, mean_length=self.mean_length)

    @classmethod
    def load(cls, path: Path) -> Confidence:
        """Read what :meth:`save` wrote."""
        with np.load(path, allow_pickle=False) as z:
            kind = Weighting(str(z["kind"]))
            idf = z["idf"] if kind is Weighting.BM25 else None
            return cls(kind, float(z["k1"]), float(z["b"]), idf, float(z["mean_length"]))
