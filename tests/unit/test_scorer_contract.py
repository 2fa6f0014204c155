"""Every scorer returns the blended top k that :func:`recsys.models.blend.blend_scores` defines.

One set of checks (:class:`TestScorerContract`), run against every scorer:

- ``numpy``: the reference, :func:`recsys.scoring.topk.numpy_topk` over every track;
- ``onnx int8``, ``onnx float32``, ``onnx float32 in chunks of 64``: :class:`OnnxScorer` with
  each catalogue pass it supports (the last takes the float32 shortlist in two TopK passes);
- ``ann``: :class:`AnnScorer`, searching as wide as the catalogue so that its proposal is
  exact (its recall at a normal search width is measured in ``test_ann.py``);
- ``merge``: :func:`recsys.models.blend.blended_top_k`, what :class:`ALSModel` ranks with in
  evaluation: implicit's ALS top k merged with the kNN candidates by ``merge_row``.

They all get the same generated playlists, built as serving builds them: a user vector, the
tracks the playlist holds (its kNN candidates come from them and a random similarity with
some negative weights) and further excluded tracks. Catalogues of 3, 50, 500 and 3000 tracks
with 2 to 32 factors, each with two tracks of identical factors and similarity columns (an
exact tie); rows with an all-zero, a large and a small vector, with nothing held, with many
held tracks, and with every track but one excluded; ``k`` of 1, 10 and beyond the catalogue;
kNN weights 0 (plain ALS), 0.3 and 0.7.

The truth is the blended score computed here in float64 from its definition.

Tolerance: a returned score is within ``tol`` of the track's exact score, with per track

    tol = s · (e + |als| · e_peak / |peak|) + RTOL · (s · |als| + w) + 1e-6

where ``e = factors · ε₃₂ · Σ|uᵢ yᵢ|`` bounds the float32 rounding of the track's ALS dot
product (``e_peak`` that of the best allowed track, the normaliser ``peak``), ``s`` is the
blend's ALS factor ``(1 - w) / |peak|`` (plain ALS: ``s = 1``, no peak term) and ``RTOL``
covers the blend's own float32 operations. The ``j``-th returned score is within the row's
largest ``tol`` (over the tracks at stake: the exact best ``k + 1`` and those returned) of the
``j``-th best exact score.

Ties: tracks whose exact scores are within twice that largest ``tol`` of each other may
come in either order, and which of them is cut at ``k`` is free. Every other position holds
the same track as the exact ranking, so all scorers return the same ids there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from onnx import numpy_helper

from recsys.data.track_rows import TrackRows
from recsys.models.blend import EPS, blended_top_k, knn_candidates, knn_scores
from recsys.registry.artifacts import INDEX_FILE, SCORING
from recsys.scoring.ann import AnnScorer, build_index
from recsys.scoring.topk import ScoringBatch, TopK, numpy_topk
from tests.unit.test_onnx_scoring import VARIANTS, export_graph, scorer_for

CATALOGUES = [(3, 2), (50, 5), (500, 12), (3000, 32)]
"""Tracks and factors."""
WEIGHTS = [0.0, 0.3, 0.7]
RTOL = 1e-6
HELD = [2, 0, 15, 5, 5, 3, 1, 40]
"""Tracks each generated playlist holds (at most all but one of the catalogue; see :func:`playlists`)."""
EXTRA = [0, 0, 4, 1, 0, 2, 0, 10]
"""Further tracks each one excludes."""


@dataclass
class Playlists:
    """A batch of playlists as every scorer is asked about them."""

    users: np.ndarray
    held: TrackRows
    excluded: TrackRows
    """The held tracks and the further excluded ones."""
    weight: float


Score = Callable[[Playlists, int], TopK]
"""A scorer's top ``k`` for a batch of playlists."""


@dataclass
class Catalogue:
    """Generated item factors and similarity, the version files built from them, and answers."""

    folder: Path
    items: np.ndarray
    similarity: sp.csr_matrix
    scorers: dict[str, Score] = field(default_factory=dict)
    answers: dict[tuple[str, float], dict[int, TopK]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.items)

    def matrix(self, rows: TrackRows) -> sp.csr_matrix:
        """Rows x tracks indicator of ``rows``."""
        data = np.ones(len(rows.indices), np.float32)
        return sp.csr_matrix((data, rows.indices, rows.indptr), shape=(len(rows), self.n))

    def graph(self) -> Path:
        """The scoring graph of the catalogue's version folder (exported once)."""
        path = self.folder / SCORING
        if not path.exists():
            export_graph(self.folder, self.items)
        return path

    def batch(self, p: Playlists) -> ScoringBatch:
        """What serving hands a scorer (as :class:`VersionRecommender` builds it)."""
        candidates = knn_scores(p.held.indptr, p.held.indices, self.similarity)
        return ScoringBatch.of(p.users, p.excluded, candidates, p.weight)


def _numpy(catalogue: Catalogue) -> Score:
    def score(p: Playlists, k: int) -> TopK:
        b = catalogue.batch(p)
        return numpy_topk(
            b.users,
            catalogue.items,
            b.exclude,
            k,
            candidates=b.candidates,
            candidate_scores=b.candidate_scores,
            weight=b.weight,
        )

    return score


def _onnx(variant: str) -> Callable[[Catalogue], Score]:
    def build(catalogue: Catalogue) -> Score:
        scorer = scorer_for(catalogue.graph(), variant)
        return lambda p, k: scorer.score(catalogue.batch(p), k)

    return build


def _ann(catalogue: Catalogue) -> Score:
    path = catalogue.folder / INDEX_FILE
    build_index(catalogue.items, path)
    scorer = AnnScorer(path, catalogue.items, search_effort=catalogue.n)
    return lambda p, k: scorer.score(catalogue.batch(p), k)


def _merge(catalogue: Catalogue) -> Score:
    def score(p: Playlists, k: int) -> TopK:
        als = AlternatingLeastSquares(factors=catalogue.items.shape[1])
        als.user_factors, als.item_factors = p.users, catalogue.items
        rows = np.arange(len(p.users))
        excluded = catalogue.matrix(p.excluded)
        ids, scores = blended_top_k(
            p.users,
            catalogue.items,
            knn_candidates(catalogue.matrix(p.held), catalogue.similarity, excluded),
            excluded,
            weight=p.weight,
            k=k,
            als_top_k=lambda hidden, n: als.recommend(rows, hidden, N=n, filter_already_liked_items=True),
        )
        return TopK(ids, scores)

    return score


SCORERS: dict[str, Callable[[Catalogue], Score]] = {
    "numpy": _numpy,
    **{f"onnx {variant}": _onnx(variant) for variant in VARIANTS},
    "ann": _ann,
    "merge": _merge,
}


@pytest.fixture(scope="module", params=CATALOGUES, ids=[f"{n}x{f}" for n, f in CATALOGUES])
def catalogue(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    """Random factors and similarity (some weights negative); tracks 0 and 1 are indistinguishable."""
    n, factors = request.param
    rng = np.random.default_rng(n)
    items = rng.standard_normal((n, factors)).astype(np.float32)
    items[1] = items[0]
    similarity = sp.random(n, n, density=min(1.0, 8 / n), random_state=n, format="csc", dtype=np.float32)
    similarity.data -= 0.2
    similarity = sp.hstack([similarity[:, :1], similarity[:, :1], similarity[:, 2:]], format="csr")
    return Catalogue(tmp_path_factory.mktemp(f"catalogue-{n}"), items, similarity)


def playlists(catalogue: Catalogue, weight: float) -> Playlists:
    """Eight playlists: an all-zero vector (row 0), nothing held (1), a vector 100 times larger (3)
    and one 100 times smaller (4), every track but one excluded (6), many held tracks (7)."""
    n = catalogue.n
    rng = np.random.default_rng([n, int(weight * 10)])
    users = rng.standard_normal((len(HELD), catalogue.items.shape[1])).astype(np.float32)
    users[0] = 0.0
    users[3] *= 100
    users[4] *= 0.01
    held = [rng.choice(n, min(size, n - 1), replace=False) for size in HELD]
    extra = [rng.choice(n, min(size, n - 1), replace=False) for size in EXTRA]
    extra[6] = np.delete(np.arange(n), rng.integers(n))
    held_rows = TrackRows.of(held)
    return Playlists(users, held_rows, held_rows.union(TrackRows.of(extra)), weight)


def exact_scores(catalogue: Catalogue, p: Playlists) -> np.ndarray:
    """Every track's blended score in float64, ``-inf`` where excluded."""
    als = p.users.astype(np.float64) @ catalogue.items.astype(np.float64).T
    allowed = catalogue.matrix(p.excluded).toarray() == 0
    if p.weight <= 0:
        return np.where(allowed, als, -np.inf)
    knn = (catalogue.matrix(p.held).astype(np.float64) @ catalogue.similarity.astype(np.float64)).toarray()
    knn = np.where(allowed & (knn > 0), knn, 0.0)
    peak = np.where(allowed, als, -np.inf).max(axis=1, keepdims=True, initial=-np.inf)
    peak = np.maximum(np.abs(np.where(np.isfinite(peak), peak, 1.0)), EPS)
    knn_peak = np.maximum(knn.max(axis=1, keepdims=True), EPS)
    return np.where(allowed, (1 - p.weight) * als / peak + p.weight * knn / knn_peak, -np.inf)


def tolerances(catalogue: Catalogue, p: Playlists) -> np.ndarray:
    """How far each track's float32 score may be from its exact one, ``[rows, tracks]`` (module text)."""
    users, items = p.users.astype(np.float64), catalogue.items.astype(np.float64)
    als = users @ items.T
    error = items.shape[1] * float(np.finfo(np.float32).eps) * (np.abs(users) @ np.abs(items).T)
    magnitude = np.abs(als)
    if p.weight > 0:
        allowed = catalogue.matrix(p.excluded).toarray() == 0
        at = np.where(allowed, als, -np.inf).argmax(axis=1)
        rows = np.arange(len(als))
        peak = np.maximum(np.abs(als[rows, at]), EPS)[:, None]
        share = (1 - p.weight) / peak
        error = share * (error + np.abs(als) * error[rows, at][:, None] / peak)
        magnitude = share * np.abs(als) + p.weight
    tol: np.ndarray = error + RTOL * magnitude + 1e-6
    return tol


def answers(scorer: str, catalogue: Catalogue, weight: float) -> tuple[Playlists, dict[int, TopK]]:
    """The scorer's top k for every ``k`` under test, computed once per catalogue and weight."""
    p = playlists(catalogue, weight)
    key = (scorer, weight)
    if key not in catalogue.answers:
        if scorer not in catalogue.scorers:
            catalogue.scorers[scorer] = SCORERS[scorer](catalogue)
        score = catalogue.scorers[scorer]
        catalogue.answers[key] = {k: score(p, k) for k in (1, 10, catalogue.n + 5)}
    return p, catalogue.answers[key]


@pytest.mark.parametrize("weight", WEIGHTS, ids=[f"w={w}" for w in WEIGHTS])
@pytest.mark.parametrize("scorer", list(SCORERS))
class TestScorerContract:
    """What every scorer returns for the same playlists."""

    def test_excluded_tracks_never_appear_and_every_allowed_slot_is_filled(
        self, scorer: str, catalogue: Catalogue, weight: float
    ) -> None:
        p, found = answers(scorer, catalogue, weight)
        for k, top in found.items():
            for row in range(len(p.users)):
                allowed = catalogue.n - len(p.excluded.row(row))
                count = min(k, allowed)
                finite = np.isfinite(top.scores[row])
                assert finite[:count].all() and not finite[count:].any(), (k, row)
                ids = top.indices[row][:count]
                assert len(np.unique(ids)) == count and ((ids >= 0) & (ids < catalogue.n)).all(), (k, row)
                assert not np.isin(ids, p.excluded.row(row)).any(), (k, row)

    def test_scores_are_the_exact_blend_best_first(
        self, scorer: str, catalogue: Catalogue, weight: float
    ) -> None:
        p, found = answers(scorer, catalogue, weight)
        exact, tol = exact_scores(catalogue, p), tolerances(catalogue, p)
        for k, top in found.items():
            for row in range(len(p.users)):
                ranking, ids = exact_ranking(exact[row]), returned(top, row)
                scores = top.scores[row][: len(ids)].astype(np.float64)
                assert (np.diff(scores) <= 0).all(), (k, row)
                # each returned score is its track's, and the j-th is the j-th best exact score
                assert (np.abs(scores - exact[row][ids]) <= tol[row][ids]).all(), (k, row)
                at_stake = largest_tolerance(tol[row], ranking, ids)
                assert (np.abs(scores - exact[row][ranking[: len(ids)]]) <= at_stake).all(), (k, row)

    def test_same_ids_as_the_exact_ranking_except_among_ties(
        self, scorer: str, catalogue: Catalogue, weight: float
    ) -> None:
        p, found = answers(scorer, catalogue, weight)
        exact, tol = exact_scores(catalogue, p), tolerances(catalogue, p)
        for k, top in found.items():
            for row in range(len(p.users)):
                ranking, ids = exact_ranking(exact[row]), returned(top, row)
                count = min(k, len(ranking))
                gaps = -np.diff(exact[row][ranking[: count + 1]])
                margin = 2 * largest_tolerance(tol[row], ranking, ids)
                above = np.concatenate(([np.inf], gaps)) > margin
                below = np.concatenate((gaps, [np.inf]))[:count] > margin
                clear = above[:count] & below
                np.testing.assert_array_equal(
                    ids[:count][clear], ranking[:count][clear], err_msg=f"k={k}, row {row}"
                )


def exact_ranking(exact: np.ndarray) -> np.ndarray:
    """A row's allowed tracks, best exact score first."""
    allowed = np.flatnonzero(np.isfinite(exact))
    ranking: np.ndarray = allowed[np.argsort(-exact[allowed], kind="stable")]
    return ranking


def returned(top: TopK, row: int) -> np.ndarray:
    """The tracks a scorer returned for a row (those with a finite score)."""
    ids: np.ndarray = top.indices[row][np.isfinite(top.scores[row])]
    return ids


def largest_tolerance(tol: np.ndarray, ranking: np.ndarray, ids: np.ndarray) -> float:
    """The largest tolerance of the tracks at stake: the exact best ``k + 1`` and those returned."""
    return float(tol[np.concatenate((ranking[: len(ids) + 1], ids))].max(initial=0.0))


def test_the_graph_blends_with_the_same_floor_as_numpy(catalogue: Catalogue) -> None:
    """The ONNX graph cannot call :func:`blend_scores`; its constant comes from the same place."""
    model = onnx.load(str(catalogue.graph()), load_external_data=False)
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if not t.external_data}
    assert constants["eps"] == np.float32(EPS)
