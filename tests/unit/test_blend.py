"""The ALS + item-kNN blend: exact against a brute-force dense computation, in evaluation and serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.interaction_table import Interactions
from recsys.data.track_rows import TrackRows
from recsys.evaluation.protocol import prepare
from recsys.models.als import ALSModel, ALSParams
from recsys.models.blend import knn_candidates, knn_scores, merge_row
from recsys.models.device import Device
from recsys.registry.artifacts import SIMILARITY, SIMILARITY_PARTS, load_version, sha256
from recsys.registry.manifest import MANIFEST_FILE
from recsys.registry.store import FileRegistry
from recsys.scoring.recommender import Query, VersionRecommender
from training.pipeline import TrainResult

WEIGHT = 0.7


def brute_force(
    u: np.ndarray, items: np.ndarray, held: np.ndarray, similarity: sp.csr_matrix, excluded: np.ndarray
) -> np.ndarray:
    """Blended score of every track (-inf where excluded), in float64."""
    als = items.astype(np.float64) @ u.astype(np.float64)
    x = np.zeros(items.shape[0], np.float32)
    x[held] = 1
    knn = (sp.csr_matrix(x) @ similarity).toarray().ravel()
    allowed = np.ones(items.shape[0], bool)
    allowed[excluded] = False
    als_peak = abs(als[allowed].max())
    knn_peak = knn[allowed & (knn > 0)].max()
    blended = (1 - WEIGHT) * als / als_peak + np.where(knn > 0, WEIGHT * knn / knn_peak, 0.0)
    blended[~allowed] = -np.inf
    return blended


def assert_same_ranking(got: np.ndarray, blended: np.ndarray) -> None:
    """``got`` is a best-first top-k of ``blended`` (near-ties may swap)."""
    expected = np.sort(blended)[::-1][: len(got)]
    np.testing.assert_allclose(blended[got], expected, rtol=1e-4, atol=1e-6)


def test_merge_row_keeps_the_best_of_both() -> None:
    ids, scores = merge_row(
        als_ids=np.array([5, 3, 9, 1]),
        als_scores=np.array([2.0, 1.0, 0.5, 0.1]),
        candidate_ids=np.array([9, 7]),
        candidate_als=np.array([0.5, -1.0]),
        candidate_knn=np.array([1.0, 4.0]),
        weight=0.5,
        k=3,
    )
    # 5: .5*1=.5; 3: .25; 9: .5*.25 + .5*.25=.25; 7: .5*-.5 + .5*1 = .25; 1: .025
    assert ids[0] == 5 and set(ids[1:]) <= {3, 9, 7}
    assert scores[0] == pytest.approx(0.5)


def test_evaluation_blend_equals_brute_force(synth_data: Interactions) -> None:
    prepared = prepare(synth_data, seed=0)
    model = ALSModel(
        ALSParams(factors=8, iterations=3, knn_weight=WEIGHT, knn_neighbours=30), device=Device.CPU
    )
    model.fit(prepared.train)
    assert model.knn is not None and model.user_factors is not None and model.item_factors is not None
    rows = prepared.split.test_rows[:15]
    recs = model.recommend(rows, prepared.train, 40)
    for i, row in enumerate(rows):
        held = prepared.train[row].indices
        blended = brute_force(model.user_factors[row], model.item_factors, held, model.knn.similarity, held)
        assert_same_ranking(recs[i], blended)


def test_serving_blend_equals_brute_force(trained_blend: tuple[FileRegistry, TrainResult]) -> None:
    registry, result = trained_blend
    assert result.manifest.algorithm == "als_knn" and set(SIMILARITY_PARTS) <= set(result.manifest.files)
    assert set(result.manifest.metrics["methods"]) == {"most_popular", "item_knn", "als_knn"}
    model = registry.load("latest")
    assert model.similarity is not None
    assert not model.similarity.data.flags.owndata  # a view of the mapped file: swaps stay quick
    recommender = VersionRecommender(model)
    row = 4
    held = model.row_items[row].indices.astype(np.int64)
    extra = model.item_ids.externals(np.array([0, 1]))
    excluded = np.union1d(held, [0, 1])
    [rec] = recommender.recommend([Query(playlist_id=model.row_ids.external(row), exclude=extra, k=30)])
    u = np.asarray(model.row_factors[row])
    blended = brute_force(u, np.asarray(model.item_factors), held, model.similarity, excluded)
    assert len(rec.tracks) == 30
    assert_same_ranking(model.item_ids.indices(rec.tracks), blended)


def test_versions_with_the_single_file_similarity_still_load(
    trained_blend: tuple[FileRegistry, TrainResult], tmp_path: Path
) -> None:
    """Earlier versions stored the similarity as one ``.npz``; they load to the same matrix."""
    registry, _ = trained_blend
    folder = tmp_path / "2.1"
    shutil.copytree(registry.folder("latest"), folder)
    current = load_version(folder).similarity
    assert current is not None
    np.savez(
        folder / SIMILARITY,
        indptr=current.indptr.astype(np.int64),
        indices=current.indices.astype(np.int32),
        data=current.data.astype(np.float32),
        shape=np.array(current.shape, dtype=np.int64),
    )
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    for name in SIMILARITY_PARTS:
        (folder / name).unlink()
        del manifest["files"][name]
    manifest["files"][SIMILARITY] = sha256(folder / SIMILARITY)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    legacy = load_version(folder).similarity
    assert legacy is not None and (legacy != current).nnz == 0


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.lists(st.integers(0, 59), max_size=12), min_size=1, max_size=5),
    seed=st.integers(0, 10_000),
)
def test_knn_scores_equal_the_sparse_product(rows: list[list[int]], seed: int) -> None:
    """Rows with repeats, empty rows, and negative similarities (dropped, as are zero sums)."""
    similarity = sp.random(60, 60, density=0.2, random_state=seed, format="csr", dtype=np.float32)
    similarity.data -= 0.2
    held = TrackRows.of([np.array(r, np.int64) for r in rows])
    ours = knn_scores(held.indptr, held.indices, similarity)
    binary = sp.csr_matrix(
        (np.ones(len(held.indices), np.float32), held.indices, held.indptr), shape=(len(rows), 60)
    )
    expected = (binary @ similarity).toarray()
    for row in range(len(rows)):
        items, scores = ours.row(row)
        dense = np.zeros(60)
        dense[items] = scores
        assert (scores > 0).all() and len(np.unique(items)) == len(items)
        np.testing.assert_allclose(dense, np.where(expected[row] > 1e-6, expected[row], 0), atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.lists(st.integers(0, 39), max_size=10), st.lists(st.integers(0, 39), max_size=10)),
        min_size=1,
        max_size=5,
    ),
    seed=st.integers(0, 10_000),
)
def test_knn_candidates_are_the_knn_scores_less_the_excluded_tracks(
    rows: list[tuple[list[int], list[int]]], seed: int
) -> None:
    """Evaluation's candidates: positive sums of the held tracks' similarity rows, exclusions removed."""
    similarity = sp.random(40, 40, density=0.25, random_state=seed, format="csr", dtype=np.float32)
    similarity.data -= 0.2
    held, extra = (TrackRows.of([np.array(r[i], np.int64) for r in rows]) for i in (0, 1))
    excluded = held.union(extra)

    def matrix(tracks: TrackRows) -> sp.csr_matrix:
        data = np.ones(len(tracks.indices), np.float32)
        return sp.csr_matrix((data, tracks.indices, tracks.indptr), shape=(len(rows), 40))

    ours = knn_candidates(matrix(held), similarity, matrix(excluded))
    expected = (matrix(held) @ similarity).toarray()
    for row in range(len(rows)):
        items, scores = ours.row(row)
        dense = np.zeros(40)
        dense[items] = scores
        wanted = np.where(expected[row] > 1e-6, expected[row], 0)
        wanted[excluded.row(row)] = 0
        assert (np.diff(items) > 0).all() and (scores > 0).all()
        np.testing.assert_allclose(dense, wanted, atol=1e-6)
