"""Top-k scoring of user vectors against item factors: ONNX Runtime, with numpy as reference."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx

from recsys.data.track_rows import TrackRows
from recsys.errors import ArtifactCorrupt
from recsys.models.blend import EPS, Candidates, blend_scores, top_k
from recsys.models.cuda_libs import cuda_devices
from recsys.registry.artifacts import ITEM_FACTORS
from recsys.scoring.onnx_graph import (
    FORMAT_KEY,
    GRAPH_FORMAT,
    INPUT_CANDIDATE_SCORES,
    INPUT_CANDIDATES,
    INPUT_EXCLUDE,
    INPUT_K,
    INPUT_SHORTLIST,
    INPUT_USER,
    INPUT_WEIGHT,
    Q8_SCALE_KEY,
    READABLE_FORMATS,
    ROW_L1_KEY,
    SCAN_KEY,
    Scan,
    build_scoring_graph,
)

EXTERNAL_DATA_FOLDER = "session.model_external_initializers_file_folder_path"
"""Where onnxruntime finds the factor files of a graph handed over as bytes."""

log = logging.getLogger(__name__)

CPU_PROVIDER, CUDA_PROVIDER = "CPUExecutionProvider", "CUDAExecutionProvider"


@dataclass
class TopK:
    """Best-first track indices and their scores, ``[batch, k]``."""

    indices: np.ndarray
    scores: np.ndarray


SHORTLIST_MARGIN = 100
"""Tracks rescored exactly beyond ``k`` (at least; ``2k`` for large ``k``)."""


@dataclass
class ScoringBatch:
    """What the scoring graph takes for a batch of playlists (:mod:`.onnx_graph`).

    ``exclude`` and ``candidates`` are padded as :func:`pad_rows` does; ``candidate_scores``
    are raw kNN scores, ``-1`` at padding.
    """

    users: np.ndarray
    exclude: np.ndarray
    candidates: np.ndarray
    candidate_scores: np.ndarray
    weight: float = 0.0

    @classmethod
    def plain(cls, users: np.ndarray, exclude: np.ndarray) -> ScoringBatch:
        """A batch without kNN candidates (plain ALS)."""
        index, scores = pad_rows(np.zeros(len(users) + 1, np.int64), np.empty(0, np.int64), fill=-1.0)
        return cls(users, exclude, index, scores)

    @classmethod
    def of(
        cls, users: np.ndarray, excluded: TrackRows, candidates: Candidates | None = None, weight: float = 0.0
    ) -> ScoringBatch:
        """A batch from each row's excluded tracks and kNN candidates, padded as :func:`pad_rows` does.

        Parameters
        ----------
        users : ndarray, shape (rows, factors)
        excluded : TrackRows
            Tracks never returned, per row.
        candidates : Candidates, optional
            Each row's kNN candidates (:func:`recsys.models.blend.knn_scores`); they may
            include excluded tracks. Without them, or with a zero ``weight``, plain ALS.
        weight : float
            kNN share of the blend.
        """
        exclude, _ = pad_rows(excluded.indptr, excluded.indices)
        if candidates is None or weight <= 0:
            return cls.plain(users, exclude)
        index, scores = pad_rows(candidates.indptr, candidates.items, candidates.scores, fill=-1.0)
        return cls(users, exclude, index, scores, weight)

    def rows(self, rows: np.ndarray) -> ScoringBatch:
        """The sub-batch of ``rows``."""
        return ScoringBatch(
            self.users[rows],
            self.exclude[rows],
            self.candidates[rows],
            self.candidate_scores[rows],
            self.weight,
        )


def pad_rows(
    indptr: np.ndarray, items: np.ndarray, values: np.ndarray | None = None, *, fill: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """CSR rows as one ``[rows, width]`` index array and values, width at least 1.

    A row's index is padded by repeating its last entry, a row with no entries is ``-1``;
    the scoring graph treats both as no-ops. Padded values are ``fill``.
    """
    lengths = np.diff(indptr)
    if len(lengths) == 1 and lengths[0] > 0:  # one request: nothing to pad
        vals = values if values is not None else np.zeros(len(items), np.float32)
        start, stop = indptr[0], indptr[1]
        return (
            items[None, start:stop].astype(np.int64),
            vals[None, start:stop].astype(np.float32),
        )
    width = max(int(lengths.max(initial=0)), 1)
    columns = np.arange(width)[None, :]
    positions = indptr[:-1, None] + np.minimum(columns, np.maximum(lengths - 1, 0)[:, None])
    empty = (lengths == 0)[:, None]
    if len(items) == 0:
        return np.full(positions.shape, -1, np.int64), np.full(positions.shape, fill, np.float32)
    positions = np.where(empty, 0, positions)
    index = np.where(empty, -1, items[positions]).astype(np.int64)
    vals = values if values is not None else np.zeros(len(items), np.float32)
    padded = np.where(columns < lengths[:, None], vals[positions], fill).astype(np.float32)
    return index, padded


def _scatter_mask(shape: tuple[int, int], index: np.ndarray, valid: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    rows = np.repeat(np.arange(shape[0]), index.shape[1])
    mask[rows[valid.ravel()], index.ravel()[valid.ravel()]] = True
    return mask


def numpy_topk(
    users: np.ndarray,
    item_factors: np.ndarray,
    excluded: np.ndarray,
    k: int,
    *,
    candidates: np.ndarray | None = None,
    candidate_scores: np.ndarray | None = None,
    weight: float = 0.0,
) -> TopK:
    """Reference scorer: the same contract as the ONNX graph, in float32 numpy, over every track.

    Every track's :func:`recsys.models.blend.blend_scores`, cut by :func:`recsys.models.blend.top_k`;
    the inputs are a :class:`ScoringBatch`'s arrays.
    """
    als = users.astype(np.float32) @ np.asarray(item_factors, dtype=np.float32).T
    hidden = _scatter_mask(als.shape, excluded, excluded >= 0)
    knn = None
    if weight > 0 and candidates is not None and candidate_scores is not None:
        knn = np.zeros_like(als)
        real = (candidates >= 0) & (candidate_scores >= 0)
        rows = np.repeat(np.arange(len(als)), candidates.shape[1])[real.ravel()]
        knn[rows, candidates.ravel()[real.ravel()]] = candidate_scores.ravel()[real.ravel()]
    indices, scores = top_k(blend_scores(als, hidden, weight, knn), k)
    return TopK(indices, scores)


def quantization_bound(users: np.ndarray, q8_scale: float, max_row_l1: float) -> np.ndarray:
    """Per row, the largest gap between the graph's int8 ALS score and the exact one.

    The graph divides each user vector by its largest magnitude ``m``, quantizes the whole
    batch of those with one uint8 scale ``su`` (ONNX ``DynamicQuantizeLinear``) and the
    item factors with ``q8_scale``; a score is then off by at most
    ``m · ((|u/m|₁ + factors · su) · q8_scale / 2 + su · max_i |yᵢ|₁)``, plus float slack.
    """
    peak = np.maximum(np.abs(users).max(axis=1, initial=0.0), EPS)
    unit = (users / peak[:, None]).astype(np.float32)
    high, low = max(float(unit.max(initial=0.0)), 0.0), min(float(unit.min(initial=0.0)), 0.0)
    su = (high - low) / 255.0
    l1 = np.abs(unit).sum(axis=1, dtype=np.float64)
    bound: np.ndarray = ((l1 + users.shape[1] * su) * q8_scale / 2 + su * max_row_l1) * peak
    return bound * 1.001 + 1e-6


def rounding_bound(users: np.ndarray, max_row_l1: float) -> np.ndarray:
    """Per row, the largest gap between the graph's float32 scan score and the exact one.

    Both are float32 dot products of ``factors`` terms, each within
    ``factors · eps · Σ|uᵢ yᵢ| ≤ factors · eps · max|u| · max_i |yᵢ|₁`` of the true value
    whatever the order of summation (cuBLAS's or numpy's), so they differ by twice that.
    """
    gamma = users.shape[1] * float(np.finfo(np.float32).eps)
    bound: np.ndarray = 2 * gamma * np.abs(users).max(axis=1, initial=0.0).astype(np.float64) * max_row_l1
    return bound * 1.001 + 1e-6


class Scorer(Protocol):
    """What a recommender scores with: exact ONNX, or an approximate index (:mod:`recsys.scoring.ann`)."""

    provider: str
    rescored: int

    def score(self, batch: ScoringBatch, k: int | np.ndarray) -> TopK: ...

    def mapped_arrays(self) -> list[np.ndarray]:
        """Arrays the scorer maps from files (for :func:`recsys.scoring.memory_pages.populate`)."""
        ...


class OnnxScorer:
    """An onnxruntime session over a version's scoring graph (:data:`~recsys.registry.artifacts.SCORING`).

    Parameters
    ----------
    graph_path : Path
    prefer_gpu : bool
        Ask for the CUDA execution provider; onnxruntime falls back to CPU when it is
        not usable, and :attr:`provider` says which one is actually in use.
    threads : int
        Intra-op threads (0: onnxruntime's default, one per core).
    scan : {"int8", "float32"}, optional
        Precision of the pass over the whole catalogue; by default float32 when the CUDA
        provider is asked for (its int8 product runs on the CPU), else the stored int8 graph.
    """

    def __init__(
        self, graph_path: Path, *, prefer_gpu: bool = False, threads: int = 0, scan: Scan | None = None
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        # idle scoring threads sleep rather than spin: the cores are shared with the web server
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        use_cuda = prefer_gpu and cuda_usable(ort.get_available_providers())
        providers: list[Any] = [CPU_PROVIDER]
        if use_cuda:
            # TF32 products would round far beyond the float32 bound the proof relies on
            providers.insert(0, (CUDA_PROVIDER, {"use_tf32": "0"}))
        options.add_session_config_entry(EXTERNAL_DATA_FOLDER, str(graph_path.parent))
        float32 = (scan or ("float32" if use_cuda else "int8")) == "float32"
        self._session: Any = _session(graph_path, options, providers, "float32" if float32 else "int8")
        if float32 and scan is None and self._session.get_providers()[0] != CUDA_PROVIDER:
            log.warning("the CUDA provider could not be used: scoring on the CPU with the int8 graph")
            self._session = _session(graph_path, options, [CPU_PROVIDER], "int8")
        meta = self._session.get_modelmeta().custom_metadata_map
        self.q8_scale, self.max_row_l1 = float(meta[Q8_SCALE_KEY]), float(meta[ROW_L1_KEY])
        self.scan: Scan = "float32" if meta.get(SCAN_KEY) == "float32" else "int8"
        self.n_items = int(np.load(graph_path.parent / ITEM_FACTORS, mmap_mode="r").shape[0])
        self.graph_path = graph_path
        self.rescored = 0
        """Rows scored again in numpy because the catalogue pass could not prove them exact."""
        self._factors: np.ndarray | None = None
        self.provider: str = self._session.get_providers()[0]
        log.info("scoring graph %s on %s", graph_path, self.provider)

    def mapped_arrays(self) -> list[np.ndarray]:
        """None: onnxruntime reads the graph's files itself."""
        return []

    def topk(self, users: np.ndarray, excluded: np.ndarray, k: int) -> TopK:
        """Top ``k`` raw ALS scores per user vector, with ``excluded`` indices scored -inf."""
        return self.score(ScoringBatch.plain(users, excluded), k)

    def score(self, batch: ScoringBatch, k: int | np.ndarray) -> TopK:
        """Exact top ``k`` blended scores per row of ``batch``.

        ``k`` may differ per row (an array); the result is as wide as the largest. Rows
        the graph's int8 pass cannot prove exact are scored again in float32 numpy
        (counted in :attr:`rescored`).
        """
        per_row = np.broadcast_to(np.asarray(k, dtype=np.int64), (len(batch.users),))
        width = int(min(per_row.max(initial=1), self.n_items))
        shortlist = min(self.n_items, max(2 * width, width + SHORTLIST_MARGIN))
        outputs = self._session.run(
            None,
            {
                INPUT_USER: np.ascontiguousarray(batch.users, dtype=np.float32),
                INPUT_EXCLUDE: _index_input(batch.exclude, len(batch.users)),
                INPUT_CANDIDATES: _index_input(batch.candidates, len(batch.users)),
                INPUT_CANDIDATE_SCORES: _score_input(batch.candidate_scores, len(batch.users)),
                INPUT_WEIGHT: np.array([batch.weight], dtype=np.float32),
                INPUT_K: np.array([width], dtype=np.int64),
                INPUT_SHORTLIST: np.array([shortlist], dtype=np.int64),
            },
        )
        scores, indices = outputs[0], outputs[1]
        proof = Proof(*(o[:, 0] for o in outputs[2:]))
        if shortlist >= self.n_items:  # every non-candidate track was rescored
            proof.threshold = np.full_like(proof.threshold, -np.inf)
        if not np.isneginf([proof.threshold, proof.rest_als]).all():
            unproven = self._unproven(batch.users, per_row, scores, proof)
            if len(unproven):
                self.rescored += len(unproven)
                exact = numpy_topk(
                    batch.users[unproven],
                    self._item_factors(),
                    batch.exclude[unproven],
                    width,
                    candidates=batch.candidates[unproven],
                    candidate_scores=batch.candidate_scores[unproven],
                    weight=batch.weight,
                )
                scores[unproven], indices[unproven] = exact.scores, exact.indices
        return TopK(indices, scores)

    def _unproven(self, users: np.ndarray, k: np.ndarray, scores: np.ndarray, proof: Proof) -> np.ndarray:
        """Rows where a track left out could beat the returned ``k``-th or the peak."""
        bound = (
            rounding_bound(users, self.max_row_l1)
            if self.scan == "float32"
            else quantization_bound(users, self.q8_scale, self.max_row_l1)
        )
        kth = scores[np.arange(len(scores)), np.minimum(k, scores.shape[1]) - 1].astype(np.float64)
        threshold, rest_als, rest_blend = (
            v.astype(np.float64) for v in (proof.threshold, proof.rest_als, proof.rest_blend)
        )
        outside = np.maximum(threshold, rest_als) + bound
        beats_peak = np.isfinite(outside) & (outside + _slack(outside) > proof.peak)
        scale = proof.scale.astype(np.float64)
        plain = threshold + bound
        beats_kth = np.isfinite(plain) & (kth < scale * (plain + _slack(plain)))
        candidate = rest_blend + scale * bound
        beats_kth |= np.isfinite(candidate) & (kth < candidate + _slack(candidate))
        return np.flatnonzero(beats_peak | beats_kth)

    def _item_factors(self) -> np.ndarray:
        if self._factors is None:
            self._factors = np.load(self.graph_path.parent / ITEM_FACTORS)
        return self._factors


def _slack(bound: np.ndarray) -> np.ndarray:
    """Float32 slack on a bound compared with the graph's float32 outputs."""
    slack: np.ndarray = 1e-5 * (np.abs(np.where(np.isfinite(bound), bound, 0.0)) + 1.0)
    return slack


@dataclass
class Proof:
    """The scoring graph's per-row outputs that bound what it left out (:mod:`.onnx_graph`)."""

    threshold: np.ndarray
    peak: np.ndarray
    scale: np.ndarray
    rest_als: np.ndarray
    rest_blend: np.ndarray


def _check_format(graph_path: Path, meta: dict[str, str]) -> None:
    found = meta.get(FORMAT_KEY, "1")
    if found not in READABLE_FORMATS:
        raise ArtifactCorrupt(
            f"{graph_path}: scoring graph format {found}, this release reads formats"
            f" {', '.join(READABLE_FORMATS)}"
            " (train the version again)"
        )


def cuda_usable(available: list[str]) -> bool:
    """Whether onnxruntime's CUDA provider can run here; the reason is logged when not.

    Parameters
    ----------
    available : list of str
        ``onnxruntime.get_available_providers()``.

    Asking onnxruntime for CUDA without a GPU or without the CUDA libraries makes it print
    errors before it falls back to the CPU; this asks the CUDA runtime first.
    """
    if CUDA_PROVIDER not in available:
        log.info("scoring on the CPU: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        return False
    # the CUDA provider links the same pip-installed CUDA libraries as implicit's solver
    devices, reason = cuda_devices()
    if not devices:
        log.info("scoring on the CPU: %s", reason)
    return devices > 0


def _session(graph_path: Path, options: Any, providers: list[Any], scan: Scan) -> Any:
    import onnxruntime as ort

    source = graph_source(graph_path, scan)
    try:
        return ort.InferenceSession(source, options, providers=providers)
    except Exception as exc:
        raise ArtifactCorrupt(f"{graph_path}: onnxruntime refused the scoring graph ({exc})") from exc


def graph_source(graph_path: Path, scan: Scan = "int8") -> str | bytes:
    """What onnxruntime opens for a version's scoring graph: its path, or rebuilt ONNX bytes.

    The stored int8 graph of the current format is opened as it is. A float32 scan, or a
    graph of an older readable format, is rebuilt in the current format over the same
    factor files (:data:`~recsys.registry.artifacts.ITEM_FACTORS`,
    :data:`~recsys.registry.artifacts.QUANTIZED_FACTORS`): give onnxruntime the version's folder
    in the :data:`EXTERNAL_DATA_FOLDER` session entry. Raises :class:`ArtifactCorrupt` when
    the stored graph cannot be read or is of a format this release does not read.
    """
    try:
        stored = onnx.load(str(graph_path), load_external_data=False)
    except Exception as exc:
        raise ArtifactCorrupt(f"{graph_path}: unreadable scoring graph ({exc})") from exc
    meta = {prop.key: prop.value for prop in stored.metadata_props}
    _check_format(graph_path, meta)
    if scan == "int8" and meta[FORMAT_KEY] == GRAPH_FORMAT:
        return str(graph_path)
    try:
        n_items, factors = np.load(graph_path.parent / ITEM_FACTORS, mmap_mode="r").shape
        model = build_scoring_graph(
            graph_path.parent,
            n_items=n_items,
            factors=factors,
            q8_scale=float(meta[Q8_SCALE_KEY]),
            max_row_l1=float(meta[ROW_L1_KEY]),
            scan=scan,
        )
    except Exception as exc:
        raise ArtifactCorrupt(f"{graph_path}: unreadable scoring graph ({exc})") from exc
    return bytes(model.SerializeToString())


def _index_input(matrix: np.ndarray, rows: int) -> np.ndarray:
    """A ``[rows, 0]`` index array becomes one ``-1`` column (the graph's no-op padding)."""
    if matrix.shape[1] == 0:
        return np.full((rows, 1), -1, dtype=np.int64)
    return np.ascontiguousarray(matrix, dtype=np.int64)


def _score_input(matrix: np.ndarray, rows: int) -> np.ndarray:
    if matrix.shape[1] == 0:
        return np.full((rows, 1), -1.0, dtype=np.float32)
    return np.ascontiguousarray(matrix, dtype=np.float32)
