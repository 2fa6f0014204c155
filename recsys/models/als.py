"""Implicit-feedback ALS (implicit's solver) with confidence weighting and a reproducible seed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field
from threadpoolctl import threadpool_limits

from recsys.models.base import drop_filtered, pad
from recsys.models.baselines import BM25_B, BM25_K1, ITEM_KNN_NEIGHBOURS, ItemKNN
from recsys.models.blend import blended_top_k, knn_candidates
from recsys.models.confidence import Confidence, Weighting
from recsys.models.device import Device, resolve
from recsys.models.foldin import FoldIn

log = logging.getLogger(__name__)

MAX_SIMILARITY_ENTRIES = 150_000_000
"""Item-kNN neighbours kept in all (about 1.8 GB as CSR); building them takes about 4x that."""
MIN_NEIGHBOURS = 20
BLEND_BATCH = 256
"""Rows scored together by the blend (bounds the memory of the ALS candidate lists)."""
REFOLD_BATCH = 2048
"""Discounted rows folded in together (a factors x factors system each)."""

ProgressCallback = Callable[[int, float], None]
"""Called after each iteration with (iteration number from 1, seconds it took)."""


class ALSParams(BaseModel):
    """Training parameters of the ALS model (defaults tuned on the benchmark data sets)."""

    factors: int = Field(64, ge=1, le=1024)
    iterations: int = Field(15, ge=1, le=500)
    regularization: float = Field(200.0, ge=0)
    """Strong on purpose: implicit 0.7 does not scale it by counts; reg/alpha around 30 works best."""
    alpha: float = Field(6.0, gt=0)
    weighting: Weighting = Weighting.BM25
    bm25_k1: float = Field(100.0, gt=0)
    bm25_b: float = Field(0.0, ge=0, le=1)
    """0: no length normalisation, so on 0/1 playlist data the weight of an entry is its track's IDF."""
    knn_weight: float = Field(0.7, ge=0, le=1)
    """Share of item-kNN in the blended score; 0 serves plain ALS through the ONNX graph alone."""
    knn_neighbours: int = Field(ITEM_KNN_NEIGHBOURS, ge=1)
    knn_bm25_k1: float = Field(BM25_K1, gt=0)
    knn_bm25_b: float = Field(BM25_B, ge=0, le=1)
    seed: int = 0

    @property
    def blended(self) -> bool:
        return self.knn_weight > 0

    def item_knn(self) -> ItemKNN:
        """The item-kNN this configuration blends with (and uses as its baseline)."""
        return ItemKNN(neighbours=self.knn_neighbours, k1=self.knn_bm25_k1, b=self.knn_bm25_b)


@dataclass
class FitReport:
    """What a fit did: device, wall time per phase."""

    device: Device
    fit_seconds: float
    iteration_seconds: list[float]


class ALSModel:
    """ALS on confidence-weighted interactions, blended with item-kNN unless ``knn_weight`` is 0.

    Parameters
    ----------
    params : ALSParams
    device : Device
        ``auto`` trains on the GPU when implicit's CUDA build can use one.
    """

    def __init__(self, params: ALSParams | None = None, *, device: Device = Device.AUTO) -> None:
        self.params = params or ALSParams()
        self.requested_device = device
        self.confidence: Confidence | None = None
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.report: FitReport | None = None
        self.knn: ItemKNN | None = None
        self._implicit: Any = None

    @property
    def fitted(self) -> bool:
        return self._implicit is not None

    @property
    def name(self) -> str:
        """``als_knn`` for the blend, ``als`` for plain ALS (the key of its offline metrics)."""
        return "als_knn" if self.params.blended else "als"

    def fit(
        self,
        matrix: sp.csr_matrix,
        *,
        progress: ProgressCallback | None = None,
        row_weights: np.ndarray | None = None,
    ) -> None:
        """Weight ``matrix`` and run ALS; factors land on the CPU whatever the device.

        Parameters
        ----------
        matrix : csr_matrix
            Rows x tracks interaction weights.
        progress : callable, optional
            Called after each ALS iteration.
        row_weights : ndarray of float, optional
            How much each row counts (0..1, account trust, :mod:`recsys.trust`) in what is
            learnt for everyone: the track factors, the weighting's IDF and the item-kNN.
            Rows below 1 then get their own vectors by fold-in of their full history, so a
            discounted listener is still served from everything they did.
        """
        p = self.params
        learnt = _scaled_rows(matrix, row_weights)
        self.confidence = Confidence.fit(learnt, kind=p.weighting, k1=p.bm25_k1, b=p.bm25_b)
        weighted = self.confidence.transform(learnt)
        device = resolve(self.requested_device)
        if device is Device.GPU:
            # implicit 0.7's GPU fit ignores `alpha` (its CPU fit scales by it): scale here instead
            weighted = weighted * np.float32(p.alpha)
        times: list[float] = []
        last = time.perf_counter()

        def on_iteration(iteration: int, elapsed: float, loss: float | None) -> None:
            nonlocal last
            now = time.perf_counter()
            times.append(now - last)
            last = now
            if progress is not None:
                progress(iteration + 1, times[-1])

        start = time.perf_counter()
        with threadpool_limits(1, "blas"):
            model = _implicit_als(p, gpu=device is Device.GPU)
            model.fit(weighted, show_progress=False, callback=on_iteration)
            fit_seconds = time.perf_counter() - start
            cpu_model = model.to_cpu() if device is Device.GPU else model
        self.user_factors = np.ascontiguousarray(cpu_model.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(cpu_model.item_factors, dtype=np.float32)
        self._implicit = cpu_model
        del weighted
        if row_weights is not None:
            self._refold(matrix, np.flatnonzero(row_weights < 1))
        if p.blended:
            neighbours = neighbour_cap(matrix.shape[1], p.knn_neighbours)
            if neighbours < p.knn_neighbours:
                log.info(
                    "item-kNN: %d neighbours per track (memory cap for %d tracks)",
                    neighbours,
                    matrix.shape[1],
                )
            self.knn = ItemKNN(neighbours=neighbours, k1=p.knn_bm25_k1, b=p.knn_bm25_b)
            self.knn.fit(learnt)
        self.report = FitReport(device, time.perf_counter() - start, times)
        log.info("ALS fit on %s: %d iterations in %.2fs", device.value, p.iterations, fit_seconds)

    def _refold(self, matrix: sp.csr_matrix, rows: np.ndarray) -> None:
        """Vectors of ``rows`` from their full (undiscounted) interactions, by fold-in."""
        assert self.confidence is not None and self.item_factors is not None and self.user_factors is not None
        fold = FoldIn(self.item_factors, regularization=self.params.regularization, alpha=self.params.alpha)
        for start in range(0, len(rows), REFOLD_BATCH):
            batch = rows[start : start + REFOLD_BATCH]
            vectors = fold.row_vectors(matrix[batch], self.confidence)
            self.user_factors[batch] = vectors
            self._implicit.user_factors[batch] = vectors

    def recommend(self, rows: np.ndarray, matrix: sp.csr_matrix, k: int) -> np.ndarray:
        """Top ``k`` per row by trained row vectors (and kNN), excluding the row's tracks."""
        if self._implicit is None or self.user_factors is None or self.item_factors is None:
            raise RuntimeError("fit the model first")
        if self.knn is None:
            # implicit pads a list longer than the catalogue with track 0 scored 0: ask for no more
            n = min(k, self.item_factors.shape[0])
            ids, scores = self._implicit.recommend(rows, matrix[rows], N=n, filter_already_liked_items=True)
            return pad(drop_filtered(ids, scores), k)
        batches = [
            self._blended(rows[i : i + BLEND_BATCH], matrix, k) for i in range(0, len(rows), BLEND_BATCH)
        ]
        return np.concatenate(batches) if batches else np.empty((0, k), np.int64)

    def _blended(self, rows: np.ndarray, matrix: sp.csr_matrix, k: int) -> np.ndarray:
        assert self.knn is not None and self.user_factors is not None and self.item_factors is not None
        binary = matrix[rows].copy()
        binary.data = np.ones_like(binary.data)
        ids, _ = blended_top_k(
            self.user_factors[rows],
            self.item_factors,
            knn_candidates(binary, self.knn.similarity, binary),
            binary,
            weight=self.params.knn_weight,
            k=k,
            als_top_k=lambda hidden, n: self._implicit.recommend(
                rows, hidden, N=n, filter_already_liked_items=True
            ),
        )
        return ids


def _scaled_rows(matrix: sp.csr_matrix, row_weights: np.ndarray | None) -> sp.csr_matrix:
    """``matrix`` with each row multiplied by its weight, entries that became 0 dropped."""
    if row_weights is None:
        return matrix
    if len(row_weights) != matrix.shape[0]:
        raise ValueError(f"{len(row_weights)} row weights for {matrix.shape[0]} rows")
    scaled = matrix.astype(np.float32, copy=True)
    scaled.data *= np.repeat(np.asarray(row_weights, np.float32), np.diff(scaled.indptr))
    scaled.eliminate_zeros()
    return scaled


def neighbour_cap(n_items: int, requested: int) -> int:
    """Neighbours per track, lowered on large catalogues so the similarity stays within memory."""
    return max(MIN_NEIGHBOURS, min(requested, MAX_SIMILARITY_ENTRIES // max(n_items, 1)))


def _implicit_als(p: ALSParams, *, gpu: bool) -> Any:
    from implicit.als import AlternatingLeastSquares

    return AlternatingLeastSquares(
        factors=p.factors,
        regularization=p.regularization,
        alpha=1.0 if gpu else p.alpha,
        iterations=p.iterations,
        random_state=p.seed,
        use_gpu=gpu,
        calculate_training_loss=False,
    )
