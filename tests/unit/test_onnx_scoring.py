"""The ONNX scoring graph returns numpy's top-k, on the pinned opset and IR version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.onnx_graph import IR_VERSION, OPSET, export_scoring_graph
from recsys.scoring import OnnxScorer, exclusion_matrix, numpy_topk


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("graph")
    items = np.random.default_rng(0).standard_normal((500, 12)).astype(np.float32)
    np.save(folder / "item_factors.npy", items)
    export_scoring_graph(folder / "scoring.onnx", folder / "item_factors.npy", n_items=500, factors=12)
    return folder / "scoring.onnx", items


def test_graph_pins_opset_and_ir(graph: tuple[Path, np.ndarray]) -> None:
    model = onnx.load(str(graph[0]), load_external_data=False)
    assert model.ir_version == IR_VERSION
    assert [o.version for o in model.opset_import if o.domain == ""] == [OPSET]


def test_item_factors_are_not_duplicated_into_the_graph(graph: tuple[Path, np.ndarray]) -> None:
    assert graph[0].stat().st_size < 4096


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 8),
    k=st.integers(1, 60),
    n_excluded=st.integers(0, 40),
    seed=st.integers(0, 10_000),
)
def test_onnx_topk_equals_numpy(
    graph: tuple[Path, np.ndarray], batch: int, k: int, n_excluded: int, seed: int
) -> None:
    path, items = graph
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((batch, items.shape[1])).astype(np.float32)
    excluded = exclusion_matrix([rng.choice(len(items), n_excluded, replace=False) for _ in range(batch)])
    ours = OnnxScorer(path).topk(users, excluded, k)
    reference = numpy_topk(users, items, excluded, k)
    np.testing.assert_array_equal(ours.indices, reference.indices)
    np.testing.assert_allclose(ours.scores, reference.scores, rtol=1e-5, atol=1e-5)
    for row in range(batch):
        assert not np.isin(ours.indices[row], excluded[row]).any()


def test_provider_is_reported(graph: tuple[Path, np.ndarray]) -> None:
    scorer = OnnxScorer(graph[0], prefer_gpu=True)
    assert scorer.provider in {"CPUExecutionProvider", "CUDAExecutionProvider"}


def test_exclusion_rows_are_padded_with_their_own_index() -> None:
    matrix = exclusion_matrix([np.array([4, 5, 6]), np.array([9])])
    np.testing.assert_array_equal(matrix, [[4, 5, 6], [9, 9, 9]])
    assert exclusion_matrix([np.array([], np.int64)]).shape == (1, 0)
