"""Next-track recommendations from a loaded model version, for known or new playlists.

Shared by the batch command and the serving API: a playlist the model was trained
on uses its trained vector; any other is folded in from its tracks. Tracks the
playlist holds and tracks the caller excludes are never returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from recsys.data.track_rows import TrackRows
from recsys.errors import InvalidRequest, UnknownTrack
from recsys.models.blend import knn_scores
from recsys.models.foldin import FoldIn
from recsys.registry.artifacts import LoadedModel
from recsys.scoring.ann import AnnScorer
from recsys.scoring.memory_pages import populate
from recsys.scoring.topk import CUDA_PROVIDER, OnnxScorer, Scorer, ScoringBatch, TopK, cuda_usable

MAX_K = 500


@dataclass
class Query:
    """One playlist to continue."""

    playlist_id: str | None = None
    tracks: Sequence[str] = ()
    exclude: Sequence[str] = ()
    k: int = 20
    vector: Sequence[float] | None = None
    """The listener's vector (the speed layer's), used when neither a playlist nor tracks are given."""
    popularity: bool = False
    """Answer with the most popular tracks the playlist does not hold (a holdout user)."""


@dataclass
class Recommendations:
    """Best-first track ids with scores, and the version that produced them."""

    playlist_id: str | None
    tracks: list[str]
    scores: list[float]
    model_version: str
    folded_in: bool = False
    popularity_fallback: bool = False
    """True when nothing about the playlist was known and the most popular tracks were returned."""
    unknown_tracks: list[str] = field(default_factory=list)


@dataclass
class _Prepared:
    """A batch of queries resolved to indices: vectors, held and excluded tracks (rows x tracks)."""

    vectors: np.ndarray
    held: TrackRows
    excluded: TrackRows
    folded: list[bool]
    unknown: list[list[str]]
    unseeded: list[bool]
    """Folded in with no known track: nothing is known about the playlist."""


def _scorer(model: LoadedModel, *, prefer_gpu: bool, threads: int, approximate: bool) -> Scorer:
    """Exact on a working GPU (faster than the approximate index); else the index when shipped."""
    index = model.ann_index if approximate else None
    # with an index to fall back on, open an exact session only where CUDA can run it
    if prefer_gpu and (index is None or cuda_usable(ort.get_available_providers())):
        exact = OnnxScorer(model.scoring_graph, prefer_gpu=True, threads=threads)
        if exact.provider == CUDA_PROVIDER or index is None:
            return exact
    if index is not None:
        return AnnScorer(index, model.item_factors, threads=threads)
    return OnnxScorer(model.scoring_graph, threads=threads)


class VersionRecommender:
    """Recommend with one loaded, verified model version.

    Parameters
    ----------
    model : LoadedModel
    prefer_gpu : bool
        Ask onnxruntime for CUDA (it falls back to CPU; see ``provider``).
    threads : int
        onnxruntime intra-op threads (0: one per core).
    approximate : bool
        Score with the version's HNSW index when it ships one (:mod:`recsys.scoring.ann`), unless
        the CUDA provider is asked for and works: exact scoring on a GPU is the faster one.
    """

    def __init__(
        self, model: LoadedModel, *, prefer_gpu: bool = False, threads: int = 0, approximate: bool = True
    ) -> None:
        self.model = model
        params = model.manifest.params
        self.fold_in = FoldIn(
            model.item_factors,
            regularization=float(params["regularization"]),
            alpha=float(params["alpha"]),
        )
        self.scorer = _scorer(model, prefer_gpu=prefer_gpu, threads=threads, approximate=approximate)
        self.knn_weight = float(params.get("knn_weight", 0.0)) if model.similarity is not None else 0.0
        counts = (
            np.bincount(model.row_items.indices, minlength=len(model.item_ids))
            if model.popularity is None
            else model.popularity
        )
        self.popular = np.argsort(-counts, kind="stable")
        self._norms: np.ndarray | None = None

    def warm_up(self) -> None:
        """Fault in the mapped files, build the id look-ups and score once: fast first requests."""
        populate(self.model.mapped_arrays() + self.scorer.mapped_arrays())
        seeds = self.model.item_ids.externals(self.popular[:5])
        self.model.row_ids.get("")
        self.recommend([Query(tracks=seeds, k=10)])

    def release(self) -> None:
        """Free the id look-ups gently, before the version is dropped (see :meth:`IdMap.release`)."""
        self.model.item_ids.release()
        self.model.row_ids.release()

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def provider(self) -> str:
        return self.scorer.provider

    def recommend(self, queries: Sequence[Query]) -> list[Recommendations]:
        """Answer a batch of queries (each with its own ``k``, at most :data:`MAX_K`)."""
        for q in queries:
            if not 1 <= q.k <= MAX_K:
                raise InvalidRequest(f"k must be between 1 and {MAX_K}, got {q.k}")
        if not queries:
            return []
        p = self._prepare(queries)
        scored = np.flatnonzero(~np.asarray(p.unseeded, dtype=bool))
        top = TopK(np.empty((0, 0), np.int64), np.empty((0, 0), np.float32))
        if len(scored):
            top = self.scorer.score(
                self._scoring_batch(p).rows(scored), np.array([queries[int(i)].k for i in scored])
            )
        position = {int(row): j for j, row in enumerate(scored)}
        return [
            self._popular(q, p.excluded, i)
            if p.unseeded[i]
            else self._answer(q, top, position[i], p.folded[i], p.unknown[i])
            for i, q in enumerate(queries)
        ]

    def scoring_batch(self, queries: Sequence[Query]) -> ScoringBatch:
        """What the scorer receives for ``queries`` (for measuring the scorer on its own)."""
        return self._scoring_batch(self._prepare(queries))

    def _scoring_batch(self, p: _Prepared) -> ScoringBatch:
        """Exclusions, and for a blended model the kNN candidates of every playlist."""
        if self.knn_weight <= 0 or self.model.similarity is None:
            return ScoringBatch.of(p.vectors, p.excluded)
        candidates = knn_scores(p.held.indptr, p.held.indices, self.model.similarity)
        return ScoringBatch.of(p.vectors, p.excluded, candidates, self.knn_weight)

    def similar(self, track_id: str, k: int) -> tuple[list[str], list[float]]:
        """Tracks closest to ``track_id`` by cosine similarity of item factors (itself excluded)."""
        if not 1 <= k <= MAX_K:
            raise InvalidRequest(f"k must be between 1 and {MAX_K}, got {k}")
        index = self.model.item_ids.get(track_id)
        if index is None:
            raise UnknownTrack(f"track {track_id!r} is not in model {self.version}")
        norms = self._item_norms()
        scores = (self.fold_in.item_factors @ self.fold_in.item_factors[index]) / (norms * norms[index])
        scores[index] = -np.inf
        k = min(k, len(scores) - 1)
        top = np.argpartition(-scores, k - 1)[:k] if k > 0 else np.empty(0, np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        return self.model.item_ids.externals(top), [float(s) for s in scores[top]]

    def track_info(self, tracks: list[str]) -> dict[str, dict[str, str]]:
        """Title and artist of tracks, where the model knows them."""
        meta = self.model.track_meta
        if meta is None or "title" not in meta.column_names:
            return {}
        indices = self.model.item_ids.indices(tracks)
        titles = meta.column("title").take(indices).to_pylist()
        artists = (
            meta.column("artist").take(indices).to_pylist()
            if "artist" in meta.column_names
            else [None] * len(titles)
        )
        return {
            self.model.item_ids.external(int(i)): {k: v for k, v in (("title", t), ("artist", a)) if v}
            for i, t, a in zip(indices, titles, artists, strict=True)
        }

    def _item_norms(self) -> np.ndarray:
        if self._norms is None:
            norms = np.linalg.norm(self.fold_in.item_factors, axis=1)
            self._norms = np.where(norms > 0, norms, 1.0).astype(np.float32)
        return self._norms

    def _popular(self, q: Query, excluded: TrackRows, row: int) -> Recommendations:
        """Nothing known about the playlist: the most popular tracks it does not hold."""
        held = excluded.row(row)
        head = self.popular[: q.k + len(held)]
        picked = head[~np.isin(head, held)][: q.k]
        return Recommendations(
            playlist_id=q.playlist_id,
            tracks=self.model.item_ids.externals(picked),
            scores=[0.0] * len(picked),
            model_version=self.version,
            popularity_fallback=True,
            unknown_tracks=list(q.tracks),
        )

    def _prepare(self, queries: Sequence[Query]) -> _Prepared:
        items = self.model.item_ids
        seeds = [items.indices(q.tracks) for q in queries]
        rows = [self.model.row_ids.get(q.playlist_id) if q.playlist_id is not None else None for q in queries]
        held = TrackRows.of(
            [np.concatenate((s, self._row_tracks(r))) for s, r in zip(seeds, rows, strict=True)]
        )
        extra = [items.indices(q.exclude) for q in queries]
        excluded = held.union(TrackRows.of(extra)) if any(len(e) for e in extra) else held
        factors = self.model.item_factors.shape[1]
        vectors = np.zeros((len(queries), factors), dtype=np.float32)
        given = {
            i
            for i, q in enumerate(queries)
            if rows[i] is None and len(seeds[i]) == 0 and q.vector is not None and len(q.vector) == factors
        }
        plain = {i for i, q in enumerate(queries) if q.popularity}
        to_fold = [i for i, r in enumerate(rows) if r is None and i not in given | plain]
        known = [i for i, r in enumerate(rows) if r is not None and i not in plain]
        if known:
            vectors[known] = self.model.row_factors[np.array([rows[i] for i in known])]
        if to_fold:
            vectors[to_fold] = self._fold([seeds[i] for i in to_fold])
        for i in given:
            vectors[i] = np.asarray(queries[i].vector, dtype=np.float32)
        unknown = [
            [t for t in q.tracks if t not in items] if len(s) < len(q.tracks) else []
            for q, s in zip(queries, seeds, strict=True)
        ]
        return _Prepared(
            vectors=vectors,
            held=held,
            excluded=excluded,
            folded=[r is None and i not in given for i, r in enumerate(rows)],
            unknown=unknown,
            unseeded=[
                i in plain or (r is None and len(s) == 0 and i not in given)
                for i, (s, r) in enumerate(zip(seeds, rows, strict=True))
            ],
        )

    def _row_tracks(self, row: int | None) -> np.ndarray:
        if row is None:
            return np.empty(0, np.int64)
        matrix = self.model.row_items
        tracks: np.ndarray = matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]].astype(np.int64)
        return tracks

    def _fold(self, track_lists: list[np.ndarray]) -> np.ndarray:
        """Fold-in vectors of playlists from their tracks (each weighted as in training)."""
        rows = TrackRows.of(track_lists)
        weights = self.model.confidence.weights(rows.indptr, rows.indices, np.ones(len(rows.indices)))
        nonzero = weights != 0  # as the sparse transform drops zero weights
        kept = rows.keep(nonzero)
        return self.fold_in.solve(kept.indptr, kept.indices, weights[nonzero])

    def _answer(self, q: Query, top: TopK, i: int, folded: bool, unknown: list[str]) -> Recommendations:
        valid = np.isfinite(top.scores[i][: q.k])
        picked = top.indices[i][: q.k][valid]
        return Recommendations(
            playlist_id=q.playlist_id,
            tracks=self.model.item_ids.externals(picked),
            scores=[float(s) for s in top.scores[i][: q.k][valid]],
            model_version=self.version,
            folded_in=folded,
            unknown_tracks=unknown,
        )
