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

from recsys.models.base import pad
from recsys.models.confidence import Confidence, Weighting
from recsys.models.device import Device, resolve

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, float], None]
"""Called after each iteration with (iteration number from 1, seconds it took)."""


class ALSParams(BaseModel):
    """Training parameters of the ALS model (defaults tuned on the benchmark data sets)."""

    factors: int = Field(64, ge=1, le=1024)
    iterations: int = Field(15, ge=1, le=500)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(20.0, gt=0)
    weighting: Weighting = Weighting.BM25
    bm25_k1: float = Field(100.0, gt=0)
    bm25_b: float = Field(0.8, ge=0, le=1)
    seed: int = 0


@dataclass
class FitReport:
    """What a fit did: device, wall time per phase."""

    device: Device
    fit_seconds: float
    iteration_seconds: list[float]


class ALSModel:
    """ALS on confidence-weighted interactions.

    Parameters
    ----------
    params : ALSParams
    device : Device
        ``auto`` trains on the GPU when implicit's CUDA build can use one.
    """

    name = "als"

    def __init__(self, params: ALSParams | None = None, *, device: Device = Device.AUTO) -> None:
        self.params = params or ALSParams()
        self.requested_device = device
        self.confidence: Confidence | None = None
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.report: FitReport | None = None
        self._implicit: Any = None

    def fit(self, matrix: sp.csr_matrix, *, progress: ProgressCallback | None = None) -> None:
        """Weight ``matrix`` and run ALS; factors land on the CPU whatever the device."""
        p = self.params
        self.confidence = Confidence.fit(matrix, kind=p.weighting, k1=p.bm25_k1, b=p.bm25_b)
        weighted = self.confidence.transform(matrix)
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
        self.report = FitReport(device, fit_seconds, times)
        log.info("ALS fit on %s: %d iterations in %.2fs", device.value, p.iterations, fit_seconds)

    def recommend(self, rows: np.ndarray, matrix: sp.csr_matrix, k: int) -> np.ndarray:
        """Top ``k`` per row by trained row vectors, excluding the row's tracks."""
        if self._implicit is None:
            raise RuntimeError("fit the model first")
        ids, _ = self._implicit.recommend(rows, matrix[rows], N=k, filter_already_liked_items=True)
        return pad(np.where(np.asarray(ids) < 0, -1, ids).astype(np.int64), k)


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
