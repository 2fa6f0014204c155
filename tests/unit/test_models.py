"""ALS, its confidence weighting and fold-in, the baselines, and device selection."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.nearest_neighbours import bm25_weight

from recsys.data.interaction_table import Interactions
from recsys.errors import DeviceUnavailable
from recsys.models.als import ALSModel, ALSParams
from recsys.models.baselines import ItemKNN, MostPopular
from recsys.models.confidence import Confidence, Weighting
from recsys.models.device import Device, gpu_available, resolve
from recsys.models.foldin import FoldIn

PARAMS = ALSParams(factors=8, iterations=3, seed=1)


@pytest.fixture(scope="module")
def matrix(synth_data: Interactions) -> sp.csr_matrix:
    return synth_data.to_csr()


def test_bm25_matches_implicit_for_positive_data(matrix: sp.csr_matrix) -> None:
    ours = Confidence.fit(matrix, kind=Weighting.BM25, k1=100, b=0.8).transform(matrix)
    theirs = bm25_weight(matrix, K1=100, B=0.8).tocsr()
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-5, atol=1e-6)


def test_bm25_keeps_the_sign_of_dislikes() -> None:
    dense = np.zeros((6, 3), dtype=np.float32)
    dense[:, 0] = 1.0
    dense[0, 1] = -4.0
    m = sp.csr_matrix(dense)
    weighted = Confidence.fit(m, kind=Weighting.BM25).transform(m)
    assert weighted[0, 1] < 0  # still a dislike, with BM25 magnitude


def test_als_is_deterministic_for_a_seed(matrix: sp.csr_matrix) -> None:
    a, b = ALSModel(PARAMS, device=Device.CPU), ALSModel(PARAMS, device=Device.CPU)
    a.fit(matrix)
    b.fit(matrix)
    np.testing.assert_allclose(a.item_factors, b.item_factors, rtol=1e-4, atol=1e-5)
    assert (
        a.report is not None
        and a.report.device is Device.CPU
        and len(a.report.iteration_seconds) == PARAMS.iterations
    )


def test_fold_in_equals_implicits_recalculate_user(matrix: sp.csr_matrix) -> None:
    model = ALSModel(PARAMS, device=Device.CPU)
    model.fit(matrix)
    assert model.confidence is not None and model.item_factors is not None
    rows = np.arange(5)
    weighted = model.confidence.transform(matrix)[rows]
    weighted.data[:3] *= -1  # a few known dislikes too
    ours = FoldIn(model.item_factors, regularization=PARAMS.regularization, alpha=PARAMS.alpha).vectors(
        weighted
    )
    theirs = model._implicit.recalculate_user(rows, weighted)
    np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=2e-4)


def test_recommendations_exclude_the_rows_own_tracks(matrix: sp.csr_matrix) -> None:
    rows = np.arange(20)
    models = [MostPopular(), ItemKNN(neighbours=20)]
    als = ALSModel(PARAMS, device=Device.CPU)
    for model in [*models, als]:
        model.fit(matrix)
        recs = model.recommend(rows, matrix, 30)
        assert recs.shape == (20, 30)
        for i, row in enumerate(rows):
            own = set(matrix[row].indices.tolist())
            assert own.isdisjoint(set(recs[i][recs[i] >= 0].tolist())), model.name


def test_most_popular_ranks_by_count() -> None:
    m = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 1, 1], [0, 0, 1, 0]], dtype=np.float32))
    model = MostPopular()
    model.fit(m)
    np.testing.assert_array_equal(model.recommend(np.array([2]), m, 3)[0], [0, 3, 1])


def test_cpu_is_always_available_and_gpu_is_refused_without_cuda() -> None:
    assert resolve(Device.CPU) is Device.CPU
    ok, reason = gpu_available()
    if ok:
        assert resolve(Device.GPU) is Device.GPU
    else:
        assert reason
        assert resolve(Device.AUTO) is Device.CPU
        with pytest.raises(DeviceUnavailable, match="--device gpu requested"):
            resolve(Device.GPU)


@pytest.mark.parametrize("k", [4, 9])
def test_tiny_catalogue_never_pads_with_held_tracks(k: int) -> None:
    """Asked for as many tracks as the catalogue holds, or more: only the one not held, then -1."""
    m = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [1, 1, 1, 0]], dtype=np.float32))
    for model in (
        ALSModel(ALSParams(factors=2, iterations=2, knn_weight=0), device=Device.CPU),
        ALSModel(ALSParams(factors=2, iterations=2, knn_weight=0.5, knn_neighbours=3), device=Device.CPU),
        ItemKNN(neighbours=3),
    ):
        model.fit(m)
        recs = model.recommend(np.array([3]), m, k)[0]
        assert len(recs) == k and set(recs[recs >= 0].tolist()) <= {3}, model.name
        assert (recs[1:] == -1).all(), model.name


def test_neighbours_are_capped_on_large_catalogues() -> None:
    from recsys.models.als import MAX_SIMILARITY_ENTRIES, MIN_NEIGHBOURS, neighbour_cap

    assert neighbour_cap(3_000, 200) == 200
    assert neighbour_cap(3_000_000, 200) == MAX_SIMILARITY_ENTRIES // 3_000_000
    assert neighbour_cap(10**9, 200) == MIN_NEIGHBOURS
