"""Recommendations from a loaded version: trained playlists, fold-in, exclusions, bounds."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.errors import InvalidRequest
from recsys.models.foldin import FoldIn
from recsys.registry.artifacts import LoadedModel
from recsys.registry.store import FileRegistry
from recsys.scoring.recommender import MAX_K, Query, Recommendations, VersionRecommender
from recsys.scoring.topk import TopK, numpy_topk
from training.pipeline import TrainResult


def assert_same_top(rec: Recommendations, reference: TopK, model: LoadedModel) -> None:
    """Same scores, best first, as numpy's top-k; ids equal except where scores tie."""
    np.testing.assert_allclose(rec.scores, reference.scores[0], rtol=1e-4, atol=1e-5)
    got = model.item_ids.indices(rec.tracks)
    scores = reference.scores[0]
    gap = np.abs(np.diff(scores)) > 1e-6 + 1e-4 * np.abs(scores[1:])
    clear = np.concatenate(([gap[0]], gap[1:] & gap[:-1], [False]))  # the last one's follower is unknown
    np.testing.assert_array_equal(got[clear], reference.indices[0][clear])


@pytest.fixture(scope="module")
def recommender(trained: tuple[FileRegistry, TrainResult]) -> VersionRecommender:
    return VersionRecommender(trained[0].load("production"))


def test_known_playlist_uses_its_trained_vector_and_never_returns_its_tracks(
    recommender: VersionRecommender,
) -> None:
    model = recommender.model
    pid = model.row_ids.external(3)
    own = set(model.item_ids.externals(model.row_items[3].indices))
    [rec] = recommender.recommend([Query(playlist_id=pid, k=50)])
    assert not rec.folded_in and rec.model_version == model.version
    assert len(rec.tracks) == 50 and own.isdisjoint(rec.tracks)
    excluded = np.array(sorted(model.row_items[3].indices), dtype=np.int64)[None, :]
    reference = numpy_topk(np.asarray(model.row_factors[3:4]), np.asarray(model.item_factors), excluded, 50)
    assert_same_top(rec, reference, model)
    assert rec.scores == sorted(rec.scores, reverse=True)


def test_new_playlist_is_folded_in_from_its_tracks(recommender: VersionRecommender) -> None:
    model = recommender.model
    seeds = model.item_ids.externals(np.array([1, 2, 3]))
    [rec] = recommender.recommend([Query(playlist_id="brand-new", tracks=[*seeds, "not-a-track"], k=20)])
    assert rec.folded_in and rec.unknown_tracks == ["not-a-track"]
    assert set(seeds).isdisjoint(rec.tracks)
    params = model.manifest.params
    raw = model.row_items[:1].copy()
    raw.indices, raw.indptr, raw.data = (
        np.array([1, 2, 3], np.int32),
        np.array([0, 3]),
        np.ones(3, np.float32),
    )
    vector = FoldIn(
        model.item_factors, regularization=params["regularization"], alpha=params["alpha"]
    ).vectors(model.confidence.transform(raw))
    reference = numpy_topk(vector, np.asarray(model.item_factors), np.array([[1, 2, 3]]), 20)
    assert_same_top(rec, reference, model)


def test_excluded_tracks_are_never_returned(recommender: VersionRecommender) -> None:
    model = recommender.model
    pid = model.row_ids.external(0)
    [first] = recommender.recommend([Query(playlist_id=pid, k=10)])
    [second] = recommender.recommend([Query(playlist_id=pid, k=10, exclude=first.tracks[:5])])
    assert set(first.tracks[:5]).isdisjoint(second.tracks)
    assert second.tracks[:5] == first.tracks[5:10]


def test_mixed_batch_matches_single_queries(recommender: VersionRecommender) -> None:
    model = recommender.model
    queries = [
        Query(tracks=model.item_ids.externals(np.array([5, 6])), k=7),
        Query(playlist_id=model.row_ids.external(1), k=3),
        Query(k=4),
    ]
    batch = recommender.recommend(queries)
    singles = [recommender.recommend([q])[0] for q in queries]
    assert [b.tracks for b in batch] == [s.tracks for s in singles]
    assert [len(b.tracks) for b in batch] == [7, 3, 4]


@pytest.mark.parametrize("k", [0, MAX_K + 1])
def test_k_out_of_bounds(recommender: VersionRecommender, k: int) -> None:
    with pytest.raises(InvalidRequest, match="k must be between"):
        recommender.recommend([Query(k=k)])


def test_nothing_known_falls_back_to_popularity(recommender: VersionRecommender) -> None:
    model = recommender.model
    counts = np.bincount(model.row_items.indices, minlength=len(model.item_ids))
    most_popular = model.item_ids.external(int(np.argmax(counts)))
    [rec] = recommender.recommend([Query(playlist_id="stranger", tracks=["unknown-track"], k=5)])
    assert rec.popularity_fallback and not rec.folded_in
    assert rec.tracks[0] == most_popular and len(rec.tracks) == 5
    [rec] = recommender.recommend([Query(k=5, exclude=[most_popular])])
    assert rec.popularity_fallback and most_popular not in rec.tracks
