"""The HNSW scorer: exact scores on what it returns, exclusions hold, recall against exact scoring."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import ArtifactCorrupt
from recsys.models.device import Device
from recsys.registry.artifacts import INDEX_FILE
from recsys.registry.store import FileRegistry
from recsys.scoring.ann import AnnScorer, build_index
from recsys.scoring.recommender import Query, VersionRecommender
from recsys.scoring.topk import ScoringBatch, numpy_topk, pad_rows
from tests.conftest import BLEND_PARAMS, CUDA_READY
from tests.unit.test_onnx_scoring import exclusions
from training.pipeline import TrainRequest, train

ITEMS, FACTORS = 4000, 16


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    items = np.random.default_rng(0).standard_normal((ITEMS, FACTORS)).astype(np.float32)
    path = tmp_path_factory.mktemp("ann") / INDEX_FILE
    build_index(items, path)
    return path, items


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_ann_top_k_is_exactly_scored_and_close_to_exact(
    index: tuple[Path, np.ndarray], weight: float
) -> None:
    path, items = index
    rng = np.random.default_rng(1)
    users = rng.standard_normal((30, FACTORS)).astype(np.float32)
    excluded = exclusions([rng.choice(ITEMS, 20, replace=False) for _ in range(30)])
    # candidates overlap the best ALS tracks, as a playlist's neighbours do
    best = np.argsort(-(users @ items.T), axis=1)[:, :5]
    picks = [
        np.union1d(rng.choice(ITEMS, n, replace=False), best[i] if n else []).astype(np.int64)
        for i, n in enumerate(rng.integers(0, 60, 30))
    ]
    indptr = np.concatenate(([0], np.cumsum([len(p) for p in picks])))
    candidates, knn = pad_rows(
        indptr, np.concatenate(picks), rng.random(int(indptr[-1])).astype(np.float32), fill=-1
    )
    batch = ScoringBatch(users, excluded, candidates, knn, weight)
    ours = AnnScorer(path, items).score(batch, 20)
    exact = numpy_topk(users, items, excluded, 20, candidates=candidates, candidate_scores=knn, weight=weight)
    assert recall(ours.indices, exact.indices) >= 0.95
    dense = numpy_topk(
        users, items, excluded, ITEMS, candidates=candidates, candidate_scores=knn, weight=weight
    )
    for row in range(30):
        assert len(set(ours.indices[row])) == 20
        assert not np.isin(ours.indices[row], excluded[row]).any()
        reference = dict(zip(dense.indices[row], dense.scores[row], strict=True))
        np.testing.assert_allclose(ours.scores[row], [reference[i] for i in ours.indices[row]], rtol=1e-4)
        assert list(ours.scores[row]) == sorted(ours.scores[row], reverse=True)


def test_the_index_is_read_from_a_read_only_mapping_of_its_file(index: tuple[Path, np.ndarray]) -> None:
    """Not copied into process memory: a swap neither allocates nor frees it."""
    path, items = index
    scorer = AnnScorer(path, items)
    buffer = scorer._buffer
    assert isinstance(buffer.base, memoryview) and isinstance(buffer.base.obj, mmap.mmap)
    assert not buffer.flags.writeable
    assert buffer.size == path.stat().st_size
    assert [a is buffer for a in scorer.mapped_arrays()] == [True]  # faulted in by warm_up
    users = np.random.default_rng(2).standard_normal((3, FACTORS)).astype(np.float32)
    top = scorer.score(ScoringBatch.plain(users, exclusions([[], [], []])), 5)
    assert top.indices.shape == (3, 5)


def test_an_index_of_other_factors_is_refused(index: tuple[Path, np.ndarray]) -> None:
    with pytest.raises(ArtifactCorrupt, match="does not match"):
        AnnScorer(index[0], np.ones((10, FACTORS), np.float32))


def test_a_version_trained_with_an_index_serves_from_it(synth_parquet: Path, tmp_path: Path) -> None:
    registry = FileRegistry(tmp_path / "models")
    result = train(
        TrainRequest(data=synth_parquet, params=BLEND_PARAMS, device=Device.CPU, ann=True, evaluate=False),
        registry,
    )
    assert INDEX_FILE in result.manifest.files and "index" in result.timings
    assert not list((registry.root / "cache").glob("index-*"))  # moved into the version
    model = registry.load(result.manifest.version)
    approximate, exact = VersionRecommender(model), VersionRecommender(model, approximate=False)
    assert approximate.provider == "faiss-HNSW-CPU" and exact.provider == "CPUExecutionProvider"
    # asked for the GPU: exact scoring there when CUDA works, else the index on the CPU
    on_gpu = VersionRecommender(model, prefer_gpu=True).provider
    assert on_gpu == ("CUDAExecutionProvider" if CUDA_READY else "faiss-HNSW-CPU")
    queries = [Query(tracks=model.item_ids.externals(np.arange(i, i + 5)), k=20) for i in range(0, 200, 10)]
    found = [r.tracks for r in approximate.recommend(queries)]
    truth = [r.tracks for r in exact.recommend(queries)]
    assert recall(np.array(found), np.array(truth)) >= 0.95
