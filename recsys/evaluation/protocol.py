"""Run the continuation protocol: split, fit the model and the baselines, score them alike."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.data.interaction_table import Interactions
from recsys.evaluation.baseline_cache import BaselineCache
from recsys.evaluation.metrics import NDCG_K, ranking_metrics
from recsys.evaluation.split import MAX_TEST_PLAYLISTS, ContinuationSplit, continuation_split
from recsys.models.base import Recommender
from recsys.models.baselines import ItemKNN, MostPopular

log = logging.getLogger(__name__)

Stage = Callable[[str], None]
"""Told the name of each protocol stage as it starts (for progress display)."""


@dataclass
class EvaluationReport:
    """Metrics per method on one split, with the split's description and timings."""

    split: dict[str, int]
    methods: dict[str, dict[str, float]]
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"split": self.split, "methods": self.methods, "seconds": self.seconds}


@dataclass
class PreparedSplit:
    """A split and the training matrix built from it."""

    split: ContinuationSplit
    train: sp.csr_matrix
    popularity: np.ndarray


def prepare(
    data: Interactions, *, seed: int, max_test: int = MAX_TEST_PLAYLISTS, test_rows_below: int | None = None
) -> PreparedSplit:
    """Split ``data`` (at most ``max_test`` test playlists, among the rows before
    ``test_rows_below`` if given) and build the training matrix."""
    split = continuation_split(data, seed=seed, max_test=max_test, test_rows_below=test_rows_below)
    train = data.to_csr(mask=split.train_mask)
    popularity = np.bincount(train.indices[train.data > 0], minlength=data.n_items)
    return PreparedSplit(split, train, popularity)


def score(model: Recommender, prepared: PreparedSplit, *, k: int = NDCG_K) -> dict[str, float]:
    """Recommend for the test playlists and compute every metric."""
    split = prepared.split
    recs = model.recommend(split.test_rows, prepared.train, k)
    return ranking_metrics(
        recs,
        hidden_indptr=split.hidden_indptr,
        hidden_items=split.hidden_items,
        n_items=prepared.train.shape[1],
        item_popularity=prepared.popularity,
    )


def evaluate_baselines(
    prepared: PreparedSplit,
    *,
    stage: Stage | None = None,
    cache: BaselineCache | None = None,
    data_sha256: str | None = None,
    item_knn: ItemKNN | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Fit and score most-popular and item-kNN on the prepared split.

    ``item_knn``, when given, is the kNN to score; if it is already fitted on this split
    (as the blended model's own kNN is) it is not fitted again. With a ``cache`` and the
    data's content hash, results for the same data, split and kNN configuration are reused
    (returned with ``cached`` set to 1).
    """
    item_knn = item_knn or ItemKNN()
    key = (
        BaselineCache.key(data_sha256=data_sha256, split=prepared.split.summary(), item_knn=item_knn.config)
        if data_sha256
        else None
    )
    if cache is not None and key is not None and (entry := cache.get(key)) is not None:
        if stage:
            stage("baselines (cached for this data and split)")
        return entry["methods"], entry["seconds"] | {"cached": 1.0}
    methods, seconds = _fit_baselines(prepared, item_knn, stage)
    if cache is not None and key is not None:
        cache.put(key, {"methods": methods, "seconds": seconds})
    return methods, seconds


def _fit_baselines(
    prepared: PreparedSplit, item_knn: ItemKNN, stage: Stage | None
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    methods: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    baselines: list[Recommender] = [MostPopular(), item_knn]
    for baseline in baselines:
        if stage:
            stage(f"baseline {baseline.name}")
        start = time.perf_counter()
        if not baseline.fitted:
            baseline.fit(prepared.train)
        methods[baseline.name] = score(baseline, prepared)
        seconds[baseline.name] = time.perf_counter() - start
    return methods, seconds
