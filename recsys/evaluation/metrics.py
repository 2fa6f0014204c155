"""Ranking metrics of the playlist-continuation protocol, computed for all test playlists at once.

Definitions (``G`` = hidden tracks, ``R`` = ranked recommendations, ranks from 1):

- R-precision: ``|G ∩ R[:|G|]| / |G|``
- NDCG@500: ``DCG / IDCG`` with gain ``1 / log2(rank + 1)``
- recall@50: ``|G ∩ R[:50]| / |G|``
- HR@10: 1 when any hidden track is in ``R[:10]``
- recommended songs clicks: ``floor((first hit rank - 1) / 10)``; 51 when no hit in 500
- coverage: share of the catalog recommended (top 10) to at least one test playlist
- popularity percentile@10: mean training-popularity percentile of top-10 tracks
  (0.5 = as popular as a random catalog track, 1.0 = only the most popular)
"""

from __future__ import annotations

import numpy as np

NDCG_K, RECALL_K, HR_K, CLICKS_PAGE, CLICKS_MISS = 500, 50, 10, 10, 51
PRIMARY_METRIC = "ndcg@500"
METRIC_NAMES = (
    "r_precision",
    "ndcg@500",
    "recall@50",
    "hr@10",
    "clicks",
    "coverage@10",
    "popularity@10",
)
LOWER_IS_BETTER = frozenset({"clicks"})


def hits_matrix(
    recs: np.ndarray, hidden_indptr: np.ndarray, hidden_items: np.ndarray, n_items: int
) -> np.ndarray:
    """Boolean ``[playlists, k]``: whether each recommendation is a hidden track (``-1`` = none)."""
    owner = np.repeat(np.arange(len(hidden_indptr) - 1), np.diff(hidden_indptr))
    truth = np.sort(owner.astype(np.int64) * n_items + hidden_items)
    keys = np.arange(len(recs), dtype=np.int64)[:, None] * n_items + recs
    pos = np.minimum(np.searchsorted(truth, keys), len(truth) - 1)
    hits: np.ndarray = (truth[pos] == keys) & (recs >= 0)
    return hits


def ranking_metrics(
    recs: np.ndarray,
    *,
    hidden_indptr: np.ndarray,
    hidden_items: np.ndarray,
    n_items: int,
    item_popularity: np.ndarray,
) -> dict[str, float]:
    """All protocol metrics, averaged over test playlists.

    Parameters
    ----------
    recs : ndarray of int64, shape (playlists, k)
        Ranked recommendations per test playlist, ``-1`` padded.
    hidden_indptr, hidden_items : ndarray
        CSR layout of the hidden tracks, aligned with ``recs``'s rows.
    n_items : int
        Catalog size.
    item_popularity : ndarray
        Training interaction count of each track.
    """
    hits = hits_matrix(recs, hidden_indptr, hidden_items, n_items)
    n_hidden = np.diff(hidden_indptr).astype(np.float64)
    k = recs.shape[1]
    ranks = np.arange(1, k + 1)
    top_g = ranks[None, :] <= n_hidden[:, None]
    gains = 1.0 / np.log2(ranks + 1.0)
    ideal = np.cumsum(gains)[np.minimum(n_hidden, min(k, NDCG_K)).astype(np.int64) - 1]
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), -1)
    clicks = np.where(first_hit >= 0, first_hit // CLICKS_PAGE, CLICKS_MISS)
    top10 = recs[:, :HR_K]
    percentile = _popularity_percentile(item_popularity)
    return {
        "r_precision": float(np.mean((hits & top_g).sum(axis=1) / n_hidden)),
        "ndcg@500": float(np.mean((hits[:, :NDCG_K] * gains[:NDCG_K]).sum(axis=1) / ideal)),
        "recall@50": float(np.mean(hits[:, :RECALL_K].sum(axis=1) / n_hidden)),
        "hr@10": float(np.mean(hits[:, :HR_K].any(axis=1))),
        "clicks": float(np.mean(clicks)),
        "coverage@10": float(len(np.unique(top10[top10 >= 0])) / n_items),
        "popularity@10": float(np.mean(percentile[top10[top10 >= 0]])) if (top10 >= 0).any() else 0.0,
    }


def _popularity_percentile(popularity: np.ndarray) -> np.ndarray:
    order = np.argsort(popularity, kind="stable")
    percentile = np.empty(len(popularity))
    percentile[order] = np.arange(len(popularity)) / max(len(popularity) - 1, 1)
    return percentile


def better(metric: str, a: float, b: float) -> bool:
    """Whether ``a`` beats ``b`` on ``metric`` (strictly)."""
    return a < b if metric in LOWER_IS_BETTER else a > b
