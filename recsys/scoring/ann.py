"""Approximate nearest-neighbour scoring for large catalogues (faiss HNSW, inner product).

Scoring a playlist exactly reads every item factor: 2M tracks x 64 factors is 512 MB in
float32 and 128 MB in int8, per batch. An HNSW graph finds the best inner products by
visiting a few thousand tracks. The index is built when a version is trained (its build is
minutes on a large catalogue) and ships in the version folder, checksummed like every file.

:class:`AnnScorer` has the scorer interface of :class:`recsys.scoring.topk.OnnxScorer`: the
index proposes each playlist's best ALS tracks, which are rescored exactly in float32
together with the kNN candidates, blended and cut to ``k``; exclusions hold exactly. Only
the proposal is approximate (benchmarks/README.md reports recall@20 against exact scoring).
"""

from __future__ import annotations

import logging
import mmap
from pathlib import Path
from typing import Any

import numpy as np

from recsys.models.blend import blend_scores, top_k
from recsys.scoring.topk import SHORTLIST_MARGIN, ScoringBatch, TopK

log = logging.getLogger(__name__)

ANN_MIN_ITEMS = 1_000_000
"""Catalogues at least this large get an index when trained (``--ann/--no-ann`` overrides)."""
DEGREE, BUILD_EFFORT = 32, 128
"""HNSW links per track and build-time search width (faiss's ``M`` and ``efConstruction``)."""
DEFAULT_SEARCH_EFFORT = 256
"""Search width per query (``efSearch``); it is raised to the shortlist when that is larger."""


def build_index(item_factors: np.ndarray, path: Path, *, threads: int = 0) -> None:
    """Build the HNSW index of ``item_factors`` and write it to ``path``."""
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    index = faiss.IndexHNSWFlat(factors.shape[1], DEGREE, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = BUILD_EFFORT
    index.add(factors)
    faiss.write_index(index, str(path))
    log.info("HNSW index of %d tracks written to %s", len(factors), path)


def _read_index(path: Path) -> tuple[Any, np.ndarray]:
    """The index, and the read-only mapping of its file that faiss reads it from without copying.

    faiss frees an index it read from a file in its destructor, which holds the GIL: 80-100 ms
    for a 2M-track HNSW graph, stalling every request of a server that retires an old version.
    Read zero-copy, the graph's large arrays are views into the mapped file instead. Mapped
    rather than read into process memory: a swap then neither allocates nor frees a
    gigabyte (on a virtual machine that hands freed memory back to its host, requests
    were seen to stall in the seconds after such a release), and worker processes share one
    copy in the page cache.
    Its pages are faulted in by :func:`recsys.scoring.memory_pages.populate` in slices when the version is
    warmed up: populating the whole mapping in ``mmap`` (``MAP_POPULATE``) stalled other
    threads for over 100 ms.
    """
    import faiss

    with path.open("rb") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    buffer = np.frombuffer(mapped, dtype=np.uint8)
    reader = faiss.ZeroCopyIOReader(faiss.swig_ptr(buffer), buffer.size)  # type: ignore[attr-defined]
    return faiss.read_index(reader), buffer


class AnnScorer:
    """Top ``k`` per playlist from an HNSW proposal, rescored exactly.

    Parameters
    ----------
    index_path : Path
        An index written by :func:`build_index`.
    item_factors : ndarray, shape (items, factors)
        The version's float32 item factors (for exact rescoring).
    search_effort : int
        faiss ``efSearch``: larger is slower and finds more of the true best.
    threads : int
        faiss threads (0: its default).
    """

    provider = "faiss-HNSW-CPU"

    def __init__(
        self,
        index_path: Path,
        item_factors: np.ndarray,
        *,
        search_effort: int = DEFAULT_SEARCH_EFFORT,
        threads: int = 0,
    ) -> None:
        import faiss

        if threads:
            faiss.omp_set_num_threads(threads)
        self._index, self._buffer = _read_index(index_path)
        self.items = np.ascontiguousarray(item_factors, dtype=np.float32)
        if self._index.ntotal != len(self.items) or self._index.d != self.items.shape[1]:
            from recsys.errors import ArtifactCorrupt

            raise ArtifactCorrupt(f"{index_path}: the index does not match the item factors")
        self.search_effort = search_effort
        self.n_items = len(self.items)
        self.rescored = 0

    def mapped_arrays(self) -> list[np.ndarray]:
        """The index file's mapping (see :mod:`recsys.scoring.memory_pages`)."""
        return [self._buffer]

    def score(self, batch: ScoringBatch, k: int | np.ndarray) -> TopK:
        """Best ``k`` per row (the widest ``k`` of the batch), best first."""
        per_row = np.broadcast_to(np.asarray(k, dtype=np.int64), (len(batch.users),))
        width = int(min(per_row.max(initial=1), self.n_items))
        excluded_width = int((batch.exclude >= 0).sum(axis=1).max(initial=0))
        wanted = min(self.n_items, max(2 * width, width + SHORTLIST_MARGIN) + excluded_width)
        self._index.hnsw.efSearch = max(self.search_effort, wanted)
        users = np.ascontiguousarray(batch.users, dtype=np.float32)
        _, proposed = self._index.search(users, wanted)
        return self._rescore(batch, users, proposed.astype(np.int64), width)

    def _rescore(self, batch: ScoringBatch, users: np.ndarray, proposed: np.ndarray, k: int) -> TopK:
        """Exact blended scores of the proposal and the candidates, exclusions at -inf.

        Scored by :func:`recsys.models.blend.blend_scores` and cut by :func:`recsys.models.blend.top_k`,
        as :func:`recsys.scoring.topk.numpy_topk` scores every track.
        """
        n = self.n_items
        rows = np.arange(len(users))[:, None]
        candidates = np.where(batch.candidates >= 0, batch.candidates, -1)
        pool = np.concatenate((proposed, candidates), axis=1)
        is_candidate = np.zeros(pool.shape, dtype=bool)
        is_candidate[:, proposed.shape[1] :] = (candidates >= 0) & (batch.candidate_scores >= 0)
        keys = np.where(pool >= 0, rows * n + pool, -1)
        hidden = np.isin(keys, _keys(batch.exclude, n)) | (pool < 0)
        # a proposed track that is also a candidate is scored once, as a candidate
        hidden[:, : proposed.shape[1]] |= np.isin(keys[:, : proposed.shape[1]], keys[:, proposed.shape[1] :])
        hidden[:, proposed.shape[1] :] |= ~is_candidate[:, proposed.shape[1] :] | _repeats(
            keys[:, proposed.shape[1] :]
        )
        als = np.einsum("bpf,bf->bp", self.items[np.maximum(pool, 0)], users)
        knn = None
        if batch.weight > 0:
            knn = np.zeros_like(als)
            knn[:, proposed.shape[1] :] = np.maximum(batch.candidate_scores, 0.0)
            knn = np.where(is_candidate, knn, 0.0)
        best, scores = top_k(blend_scores(als, hidden, batch.weight, knn), k)
        return TopK(np.take_along_axis(pool, best, axis=1), scores)


def _keys(index: np.ndarray, n: int) -> np.ndarray:
    rows = np.repeat(np.arange(len(index)), index.shape[1])
    flat = index.ravel()
    keys: np.ndarray = (rows * n + flat)[flat >= 0]
    return keys


def _repeats(keys: np.ndarray) -> np.ndarray:
    """True at every repeat of a key already seen earlier in its row (padding repeats entries)."""
    out = np.zeros(keys.shape, dtype=bool)
    for row in range(len(keys)):
        _, first = np.unique(keys[row], return_index=True)
        out[row] = True
        out[row, first] = False
    return out
