"""The ONNX scoring graph returns numpy's top-k, on the pinned opset and IR version."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from unittest.mock import patch

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.track_rows import TrackRows
from recsys.errors import ArtifactCorrupt
from recsys.registry.artifacts import ITEM_FACTORS, QUANTIZED_FACTORS, SCORING
from recsys.scoring import onnx_graph
from recsys.scoring import topk as scoring
from recsys.scoring.onnx_graph import FORMAT_KEY, IR_VERSION, OPSET, Scan, export_scoring_graph
from recsys.scoring.topk import CUDA_PROVIDER, OnnxScorer, ScoringBatch, numpy_topk, pad_rows
from tests.conftest import CUDA_READY

SCANS: list[Scan] = ["int8", "float32"]
VARIANTS = ["int8", "float32", "float32 in chunks of 64"]
"""Scoring graphs under test; the last takes the float32 shortlist in two TopK passes."""


def scorer_for(path: Path, variant: str) -> OnnxScorer:
    chunk = 64 if variant.endswith("chunks of 64") else onnx_graph.SCAN_CHUNK
    with patch.object(onnx_graph, "SCAN_CHUNK", chunk):
        return OnnxScorer(path, scan="int8" if variant == "int8" else "float32")


def export_graph(folder: Path, items: np.ndarray) -> Path:
    """A version folder's item factors and scoring graph; the graph's path."""
    np.save(folder / ITEM_FACTORS, items)
    export_scoring_graph(
        folder / SCORING, folder / ITEM_FACTORS, n_items=items.shape[0], factors=items.shape[1]
    )
    return folder / SCORING


def exclusions(rows: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
    """Each row's excluded tracks as a scorer takes them (padded as the recommender pads them)."""
    tracks = TrackRows.of([np.asarray(r, dtype=np.int64) for r in rows])
    return ScoringBatch.of(np.zeros((len(tracks), 1), np.float32), tracks).exclude


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    items = np.random.default_rng(0).standard_normal((500, 12)).astype(np.float32)
    return export_graph(tmp_path_factory.mktemp("graph"), items), items


def test_graph_pins_opset_and_ir(graph: tuple[Path, np.ndarray]) -> None:
    model = onnx.load(str(graph[0]), load_external_data=False)
    assert model.ir_version == IR_VERSION
    assert [o.version for o in model.opset_import if o.domain == ""] == [OPSET]


def test_item_factors_are_not_duplicated_into_the_graph(graph: tuple[Path, np.ndarray]) -> None:
    model = onnx.load(str(graph[0]), load_external_data=False)
    factors = {t.name: t for t in model.graph.initializer if t.name.startswith("item_factors")}
    assert set(factors) == {"item_factors", "item_factors_q8"}
    assert all(t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data for t in factors.values())
    locations = {e.value for t in factors.values() for e in t.external_data if e.key == "location"}
    assert locations == {ITEM_FACTORS, QUANTIZED_FACTORS}
    assert graph[0].stat().st_size < graph[1].nbytes / 2


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 8),
    k=st.integers(1, 60),
    n_excluded=st.integers(0, 40),
    seed=st.integers(0, 10_000),
    variant=st.sampled_from(VARIANTS),
)
def test_onnx_topk_equals_numpy(
    graph: tuple[Path, np.ndarray], batch: int, k: int, n_excluded: int, seed: int, variant: str
) -> None:
    path, items = graph
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((batch, items.shape[1])).astype(np.float32)
    excluded = exclusions([rng.choice(len(items), n_excluded, replace=False) for _ in range(batch)])
    ours = scorer_for(path, variant).topk(users, excluded, k)
    reference = numpy_topk(users, items, excluded, k)
    np.testing.assert_array_equal(ours.indices, reference.indices)
    np.testing.assert_allclose(ours.scores, reference.scores, rtol=1e-5, atol=1e-5)
    for row in range(batch):
        assert not np.isin(ours.indices[row], excluded[row]).any()


def test_provider_is_reported(graph: tuple[Path, np.ndarray]) -> None:
    scorer = OnnxScorer(graph[0], prefer_gpu=True)
    assert scorer.provider in {"CPUExecutionProvider", "CUDAExecutionProvider"}


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_READY, reason="onnxruntime has no CUDA provider here, or no GPU is visible")
def test_cuda_provider_is_used_and_scores_as_numpy(graph: tuple[Path, np.ndarray]) -> None:
    path, items = graph
    scorer = OnnxScorer(path, prefer_gpu=True)
    assert scorer.provider == CUDA_PROVIDER
    rng = np.random.default_rng(7)
    users = rng.standard_normal((16, items.shape[1])).astype(np.float32)
    excluded = exclusions([rng.choice(len(items), 25, replace=False) for _ in range(16)])
    np.testing.assert_array_equal(
        scorer.topk(users, excluded, 30).indices, numpy_topk(users, items, excluded, 30).indices
    )


def test_rows_are_padded_with_their_own_entries_and_empty_rows_with_minus_one() -> None:
    matrix = exclusions([np.array([4, 5, 6]), np.array([9]), np.array([], np.int64)])
    np.testing.assert_array_equal(matrix, [[4, 5, 6], [9, 9, 9], [-1, -1, -1]])
    assert exclusions([np.array([], np.int64)]).shape == (1, 1)
    index, values = pad_rows(np.array([0, 1, 1]), np.array([7]), np.array([0.5], np.float32), fill=-1.0)
    np.testing.assert_array_equal(index, [[7], [-1]])
    np.testing.assert_array_equal(values, [[0.5], [-1.0]])
    index, values = pad_rows(np.array([0, 2, 3]), np.array([7, 8, 9]), np.array([0.5, 0.25, 1], np.float32))
    np.testing.assert_array_equal(index, [[7, 8], [9, 9]])
    np.testing.assert_array_equal(values, [[0.5, 0.25], [1.0, 0.0]])


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 40)), min_size=1, max_size=6),
    weight=st.sampled_from([0.0, 0.3, 0.7]),
    k=st.integers(1, 60),
    seed=st.integers(0, 10_000),
    variant=st.sampled_from(VARIANTS),
)
def test_blended_onnx_topk_equals_numpy(
    graph: tuple[Path, np.ndarray],
    lengths: list[tuple[int, int]],
    weight: float,
    k: int,
    seed: int,
    variant: str,
) -> None:
    """kNN candidates (overlapping the exclusions) and empty rows mixed in one batch."""
    path, items = graph
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((len(lengths), items.shape[1])).astype(np.float32)
    excluded = exclusions([rng.choice(len(items), n, replace=False) for n, _ in lengths])
    picks = [rng.choice(len(items), m, replace=False) for _, m in lengths]
    indptr = np.concatenate(([0], np.cumsum([len(p) for p in picks])))
    flat = np.concatenate(picks).astype(np.int64)
    candidates, knn = pad_rows(indptr, flat, rng.random(len(flat)).astype(np.float32), fill=-1.0)
    batch = ScoringBatch(users, excluded, candidates, knn, weight)
    ours = scorer_for(path, variant).score(batch, k)
    reference = numpy_topk(
        users, items, excluded, k, candidates=candidates, candidate_scores=knn, weight=weight
    )
    np.testing.assert_allclose(ours.scores, reference.scores, rtol=1e-5, atol=1e-6)
    finite = np.isfinite(reference.scores)
    np.testing.assert_array_equal(ours.indices[finite], reference.indices[finite])
    for row in range(len(lengths)):
        assert not np.isin(ours.indices[row][np.isfinite(ours.scores[row])], excluded[row]).any()


@pytest.mark.parametrize("scan", SCANS)
def test_a_graph_of_another_format_is_refused(tmp_path: Path, scan: Scan) -> None:
    path = export_graph(tmp_path, np.ones((3, 2), np.float32))
    model = onnx.load(str(path), load_external_data=False)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {FORMAT_KEY: "1"})
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ArtifactCorrupt, match="format 1"):
        OnnxScorer(path, scan=scan)


def _scorer(folder: Path, items: np.ndarray, scan: Scan = "int8") -> OnnxScorer:
    return OnnxScorer(export_graph(folder, items), scan=scan)


def test_the_int8_pass_proves_typical_rows_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    items = rng.standard_normal((5000, 32)).astype(np.float32)
    scorer = _scorer(tmp_path, items)
    users = rng.standard_normal((40, 32)).astype(np.float32)
    excluded = exclusions([rng.choice(5000, 20, replace=False) for _ in range(40)])
    ours = scorer.topk(users, excluded, 20)
    assert scorer.rescored == 0
    np.testing.assert_array_equal(ours.indices, numpy_topk(users, items, excluded, 20).indices)


def test_rows_the_int8_pass_cannot_prove_are_rescored_exactly(tmp_path: Path) -> None:
    """Near-identical tracks: int8 cannot tell them apart, so every row is scored again."""
    rng = np.random.default_rng(4)
    items = (1.0 + 1e-4 * rng.standard_normal((3000, 16))).astype(np.float32)
    scorer = _scorer(tmp_path, items)
    users = rng.standard_normal((6, 16)).astype(np.float32)
    excluded = exclusions([np.array([1, 2])] * 6)
    ours = scorer.topk(users, excluded, 10)
    assert scorer.rescored == 6
    reference = numpy_topk(users, items, excluded, 10)
    np.testing.assert_array_equal(ours.indices, reference.indices)
    np.testing.assert_allclose(ours.scores, reference.scores, rtol=1e-6)


def test_the_float32_scan_proves_what_int8_cannot(tmp_path: Path) -> None:
    """The near-identical tracks above: the float32 scan's rounding bound is far tighter."""
    rng = np.random.default_rng(4)
    items = (1.0 + 1e-4 * rng.standard_normal((3000, 16))).astype(np.float32)
    scorer = _scorer(tmp_path, items, scan="float32")
    assert scorer.scan == "float32"
    users = rng.standard_normal((6, 16)).astype(np.float32)
    excluded = exclusions([np.array([1, 2])] * 6)
    ours = scorer.topk(users, excluded, 10)
    assert scorer.rescored == 0
    # near-ties within float32 rounding may order differently from numpy: compare exact scores
    exact = users.astype(np.float64) @ items.T.astype(np.float64)
    exact[:, [1, 2]] = -np.inf
    best = -np.sort(-exact, axis=1)[:, :10]
    np.testing.assert_allclose(np.take_along_axis(exact, ours.indices, axis=1), best, rtol=0, atol=1e-5)


def test_a_float32_scan_that_cannot_read_the_stored_graph_is_refused(tmp_path: Path) -> None:
    _scorer(tmp_path, np.ones((3, 2), np.float32))
    (tmp_path / SCORING).write_bytes(b"not a graph")
    with pytest.raises(ArtifactCorrupt, match="unreadable scoring graph"):
        OnnxScorer(tmp_path / SCORING, scan="float32")


@pytest.mark.skipif(CUDA_READY, reason="the CUDA provider works here: it cannot be made to fail")
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_a_cuda_provider_that_fails_falls_back_to_the_int8_graph_on_cpu(
    graph: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listed but unusable (no GPU, missing CUDA libraries): onnxruntime runs the CPU instead."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA_PROVIDER, "CPUExecutionProvider"])
    scorer = OnnxScorer(graph[0], prefer_gpu=True)  # no GPU: CUDA is not even asked for
    assert (scorer.provider, scorer.scan) == ("CPUExecutionProvider", "int8")
    monkeypatch.setattr(scoring, "cuda_devices", lambda: (1, ""))
    scorer = OnnxScorer(graph[0], prefer_gpu=True)  # asked for, and onnxruntime falls back
    assert (scorer.provider, scorer.scan) == ("CPUExecutionProvider", "int8")


def _blended_batch(
    rng: np.random.Generator, items: np.ndarray, rows: int, n_candidates: int, norms: np.ndarray
) -> ScoringBatch:
    users = rng.standard_normal((rows, items.shape[1])).astype(np.float32) * norms[:, None].astype(np.float32)
    excluded = exclusions([rng.choice(len(items), 20, replace=False) for _ in range(rows)])
    picks = [rng.choice(len(items), n_candidates, replace=False) for _ in range(rows)]
    indptr = np.concatenate(([0], np.cumsum([len(p) for p in picks])))
    flat = np.concatenate(picks).astype(np.int64)
    candidates, knn = pad_rows(indptr, flat, rng.random(len(flat)).astype(np.float32), fill=-1.0)
    return ScoringBatch(users, excluded, candidates, knn, 0.7)


def _assert_proven_and_exact(scorer: OnnxScorer, items: np.ndarray, batch: ScoringBatch, k: int) -> None:
    """The graph's answer is numpy's, and every row was proven without scoring it again."""
    ours = scorer.score(batch, k)
    assert scorer.rescored == 0
    reference = numpy_topk(
        batch.users,
        items,
        batch.exclude,
        k,
        candidates=batch.candidates,
        candidate_scores=batch.candidate_scores,
        weight=batch.weight,
    )
    np.testing.assert_array_equal(ours.indices, reference.indices)
    np.testing.assert_allclose(ours.scores, reference.scores, rtol=1e-5, atol=1e-6)


def test_only_some_candidates_are_rescored_and_the_rest_are_proven_below(tmp_path: Path) -> None:
    """More kNN candidates than the graph rescores, in one batch of vectors 100x apart in size.

    Each vector is quantized on its own scale: with one scale for the batch, the small
    vectors' error bound would swamp their scores and every such row would be rescored.
    """
    rng = np.random.default_rng(5)
    items = rng.standard_normal((5000, 32)).astype(np.float32)
    scorer = _scorer(tmp_path, items)
    _assert_proven_and_exact(
        scorer, items, _blended_batch(rng, items, 8, 1500, np.geomspace(0.01, 1.0, 8)), 10
    )


def test_the_best_als_track_is_found_among_candidates_with_low_knn_scores(tmp_path: Path) -> None:
    """The blend's normaliser is the best ALS score: here a candidate no kNN ranking would pick."""
    rng = np.random.default_rng(6)
    items = rng.standard_normal((3000, 16)).astype(np.float32)
    users = rng.standard_normal((1, 16)).astype(np.float32)
    best = int(np.argmax(items @ users[0]))
    scorer = _scorer(tmp_path, items)
    others = rng.choice(np.setdiff1d(np.arange(3000), [best]), 999, replace=False)
    candidates = np.concatenate(([best], others))[None, :].astype(np.int64)
    knn = np.concatenate(([0.001], 0.5 + 0.5 * rng.random(999))).astype(np.float32)[None, :]
    _assert_proven_and_exact(
        scorer, items, ScoringBatch(users, np.full((1, 1), -1, np.int64), candidates, knn, 0.7), 10
    )


def test_a_format_2_graph_is_rebuilt_in_the_current_format() -> None:
    """Versions exported before the candidate shortlist keep serving, with the current graph."""
    folder = Path(__file__).parents[1] / "fixtures" / "graph-format-2"
    stored = onnx.load(str(folder / SCORING), load_external_data=False)
    assert {p.key: p.value for p in stored.metadata_props}[FORMAT_KEY] == "2"
    items = np.load(folder / ITEM_FACTORS)
    scorer = OnnxScorer(folder / SCORING)
    assert scorer._session.get_modelmeta().custom_metadata_map[FORMAT_KEY] == onnx_graph.GRAPH_FORMAT
    rng = np.random.default_rng(8)
    _assert_proven_and_exact(
        scorer, items, _blended_batch(rng, items, 4, 200, np.geomspace(0.01, 1.0, 4)), 12
    )
