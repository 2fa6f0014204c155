"""Top-k scoring of user vectors against item factors: ONNX Runtime, with numpy as reference."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import ArtifactCorrupt
from recsys.onnx_graph import INPUT_EXCLUDE, INPUT_K, INPUT_USER

log = logging.getLogger(__name__)

CPU_PROVIDER, CUDA_PROVIDER = "CPUExecutionProvider", "CUDAExecutionProvider"


@dataclass
class TopK:
    """Best-first track indices and their scores, ``[batch, k]``."""

    indices: np.ndarray
    scores: np.ndarray


def exclusion_matrix(excluded: list[np.ndarray]) -> np.ndarray:
    """Pad per-row excluded indices to one ``[batch, n]`` array by repeating each row's first index.

    A row with nothing to exclude gets a column of ``-1``... which ONNX would reject, so
    callers with nothing excluded anywhere get a ``[batch, 0]`` array instead.
    """
    width = max((len(e) for e in excluded), default=0)
    if width == 0:
        return np.zeros((len(excluded), 0), dtype=np.int64)
    out = np.empty((len(excluded), width), dtype=np.int64)
    for row, items in enumerate(excluded):
        if len(items) == 0:
            raise ValueError("rows without exclusions cannot share a batch with rows that have some")
        out[row, : len(items)] = items
        out[row, len(items) :] = items[0]
    return out


def numpy_topk(users: np.ndarray, item_factors: np.ndarray, excluded: np.ndarray, k: int) -> TopK:
    """Reference scorer: the same contract as the ONNX graph, in numpy."""
    scores = users.astype(np.float32) @ item_factors.T
    if excluded.size:
        np.put_along_axis(scores, excluded, -np.inf, axis=1)
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return TopK(np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1))


class OnnxScorer:
    """An onnxruntime session over a version's ``scoring.onnx``.

    Parameters
    ----------
    graph_path : Path
    prefer_gpu : bool
        Ask for the CUDA execution provider; onnxruntime falls back to CPU when it is
        not usable, and :attr:`provider` says which one is actually in use.
    """

    def __init__(self, graph_path: Path, *, prefer_gpu: bool = False, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        providers = (
            [CUDA_PROVIDER, CPU_PROVIDER] if prefer_gpu and CUDA_PROVIDER in available else [CPU_PROVIDER]
        )
        try:
            self._session: Any = ort.InferenceSession(str(graph_path), options, providers=providers)
        except Exception as exc:
            raise ArtifactCorrupt(f"{graph_path}: onnxruntime refused the scoring graph ({exc})") from exc
        self.provider: str = self._session.get_providers()[0]
        log.info("scoring graph %s on %s", graph_path, self.provider)

    def topk(self, users: np.ndarray, excluded: np.ndarray, k: int) -> TopK:
        """Top ``k`` per user vector, with ``excluded`` indices scored -inf."""
        scores, indices = self._session.run(
            None,
            {
                INPUT_USER: np.ascontiguousarray(users, dtype=np.float32),
                INPUT_EXCLUDE: np.ascontiguousarray(excluded, dtype=np.int64),
                INPUT_K: np.array([k], dtype=np.int64),
            },
        )
        return TopK(indices, scores)
