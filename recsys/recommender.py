"""Next-track recommendations from a loaded model version, for known or new playlists.

Shared by the batch command and the serving API: a playlist the model was trained
on uses its trained vector; any other is folded in from its tracks. Tracks the
playlist holds and tracks the caller excludes are never returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recsys.artifacts import LoadedModel
from recsys.errors import InvalidRequest, UnknownTrack
from recsys.models.blend import knn_candidates, merge_row
from recsys.models.foldin import FoldIn
from recsys.scoring import OnnxScorer, TopK, exclusion_matrix

MAX_K = 500


@dataclass
class Query:
    """One playlist to continue."""

    playlist_id: str | None = None
    tracks: Sequence[str] = ()
    exclude: Sequence[str] = ()
    k: int = 20


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
    """Per query of a batch: its vector, the tracks it holds, what to exclude, how it was resolved."""

    vectors: np.ndarray
    held: list[np.ndarray] = field(default_factory=list)
    excluded: list[np.ndarray] = field(default_factory=list)
    folded: list[bool] = field(default_factory=list)
    unknown: list[list[str]] = field(default_factory=list)


class VersionRecommender:
    """Recommend with one loaded, verified model version.

    Parameters
    ----------
    model : LoadedModel
    prefer_gpu : bool
        Ask onnxruntime for CUDA (it falls back to CPU; see ``provider``).
    """

    def __init__(self, model: LoadedModel, *, prefer_gpu: bool = False) -> None:
        self.model = model
        params = model.manifest.params
        self.fold_in = FoldIn(
            model.item_factors,
            regularization=float(params["regularization"]),
            alpha=float(params["alpha"]),
        )
        self.scorer = OnnxScorer(model.scoring_graph, prefer_gpu=prefer_gpu)
        self.knn_weight = float(params.get("knn_weight", 0.0)) if model.similarity is not None else 0.0
        counts = np.bincount(model.row_items.indices, minlength=len(model.item_ids))
        self.popular = np.argsort(-counts, kind="stable")
        self._norms: np.ndarray | None = None

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
        k = min(max(q.k for q in queries), len(self.model.item_ids))
        top = self._blended_topk(p, k) if self.knn_weight > 0 else self._topk(p.vectors, p.excluded, k)
        answers = [self._answer(q, top, i, p.folded[i], p.unknown[i]) for i, q in enumerate(queries)]
        for i, answer in enumerate(answers):
            if p.folded[i] and len(p.unknown[i]) == len(queries[i].tracks):
                self._popular_instead(answer, p.excluded[i], queries[i].k)
        return answers

    def _blended_topk(self, p: _Prepared, k: int) -> TopK:
        """ALS top ``k + candidates`` from the graph, merged with the kNN candidates' blended scores."""
        assert self.model.similarity is not None
        candidates = knn_candidates(self._binary(p.held), self.model.similarity, p.excluded)
        # ALS's own top k among tracks that are neither excluded nor candidates
        hidden = [np.union1d(p.excluded[i], candidates.row(i)[0]) for i in range(len(p.excluded))]
        als = self._topk(p.vectors, hidden, k)
        indices = np.full((len(p.vectors), k), -1, dtype=np.int64)
        scores = np.full((len(p.vectors), k), -np.inf, dtype=np.float32)
        for i in range(len(p.vectors)):
            finite = np.isfinite(als.scores[i])
            cand, knn = candidates.row(i)
            ids, blended = merge_row(
                als_ids=als.indices[i][finite],
                als_scores=als.scores[i][finite],
                candidate_ids=cand,
                candidate_als=self.fold_in.item_factors[cand] @ p.vectors[i],
                candidate_knn=knn,
                weight=self.knn_weight,
                k=k,
            )
            indices[i, : len(ids)], scores[i, : len(ids)] = ids, blended
        return TopK(indices, scores)

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

    def _popular_instead(self, answer: Recommendations, excluded: np.ndarray, k: int) -> None:
        """Nothing known about the playlist: the most popular tracks it does not hold."""
        head = self.popular[: k + len(excluded)]
        picked = head[~np.isin(head, excluded)][:k]
        answer.tracks = self.model.item_ids.externals(picked)
        answer.scores = [0.0] * len(picked)
        answer.folded_in, answer.popularity_fallback = False, True

    def _prepare(self, queries: Sequence[Query]) -> _Prepared:
        items, rows = self.model.item_ids, self.model.row_ids
        p = _Prepared(np.zeros((len(queries), self.model.item_factors.shape[1]), dtype=np.float32))
        to_fold: list[int] = []
        for i, q in enumerate(queries):
            known = items.indices(q.tracks)
            p.unknown.append([t for t in q.tracks if t not in items])
            row = rows.get(q.playlist_id) if q.playlist_id is not None else None
            held = np.unique(np.concatenate([known, self._row_tracks(row)]).astype(np.int64))
            p.held.append(held)
            p.excluded.append(np.union1d(held, items.indices(q.exclude)))
            p.folded.append(row is None)
            if row is not None:
                p.vectors[i] = self.model.row_factors[row]
            else:
                to_fold.append(i)
        if to_fold:
            p.vectors[to_fold] = self._fold([items.indices(queries[i].tracks) for i in to_fold])
        return p

    def _row_tracks(self, row: int | None) -> np.ndarray:
        if row is None:
            return np.empty(0, np.int64)
        matrix = self.model.row_items
        tracks: np.ndarray = matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]].astype(np.int64)
        return tracks

    def _binary(self, track_lists: list[np.ndarray]) -> sp.csr_matrix:
        """Rows x tracks matrix with a 1 for each listed track."""
        indptr = np.concatenate(([0], np.cumsum([len(t) for t in track_lists]))).astype(np.int64)
        indices = np.concatenate(track_lists) if track_lists else np.empty(0, np.int64)
        return sp.csr_matrix(
            (np.ones(len(indices), np.float32), indices, indptr),
            shape=(len(track_lists), len(self.model.item_ids)),
        )

    def _fold(self, track_lists: list[np.ndarray]) -> np.ndarray:
        raw = self._binary(track_lists)
        raw.sum_duplicates()
        return self.fold_in.vectors(self.model.confidence.transform(raw))

    def _topk(self, vectors: np.ndarray, excluded: list[np.ndarray], k: int) -> TopK:
        """Score rows with exclusions and rows without in separate runs (the graph takes one shape)."""
        has = np.array([len(e) > 0 for e in excluded])
        k_eff = min(k, len(self.model.item_ids))
        indices = np.full((len(vectors), k_eff), -1, dtype=np.int64)
        scores = np.full((len(vectors), k_eff), -np.inf, dtype=np.float32)
        for group in (np.flatnonzero(has), np.flatnonzero(~has)):
            if len(group) == 0:
                continue
            matrix = (
                exclusion_matrix([excluded[i] for i in group])
                if has[group[0]]
                else np.zeros((len(group), 0), np.int64)
            )
            top = self.scorer.topk(vectors[group], matrix, k_eff)
            indices[group], scores[group] = top.indices, top.scores
        return TopK(indices, scores)

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
