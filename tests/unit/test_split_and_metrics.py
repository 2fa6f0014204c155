"""The continuation split and the ranking metrics, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.data.interaction_table import Interactions
from recsys.evaluation.metrics import CLICKS_MISS, ranking_metrics
from recsys.evaluation.split import MIN_TRACKS, continuation_split


def test_split_hides_the_last_fifth_of_eligible_playlists(synth_data: Interactions) -> None:
    split = continuation_split(synth_data, seed=1)
    counts = np.bincount(synth_data.rows, minlength=synth_data.n_rows)
    assert np.all(counts[split.test_rows] >= MIN_TRACKS)
    eligible = int((counts >= MIN_TRACKS).sum())
    assert len(split.test_rows) == round(0.2 * eligible)
    assert int((~split.train_mask).sum()) == len(split.hidden_items)
    assert synth_data.ts is not None
    for i, row in enumerate(split.test_rows[:25]):
        mine = np.flatnonzero(synth_data.rows == row)
        by_position = mine[np.argsort(synth_data.ts[mine])]
        n_hidden = max(1, math.floor(0.2 * len(mine)))
        expected = set(synth_data.items[by_position[-n_hidden:]].tolist())
        got = set(split.hidden_items[split.hidden_indptr[i] : split.hidden_indptr[i + 1]].tolist())
        assert got == expected
        assert (
            not split.train_mask[by_position[-n_hidden:]].any()
            and split.train_mask[by_position[:-n_hidden]].all()
        )


def test_split_is_seeded(synth_data: Interactions) -> None:
    a, b, c = (continuation_split(synth_data, seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.test_rows, b.test_rows)
    assert not np.array_equal(a.test_rows, c.test_rows)


def test_split_caps_the_test_set(synth_data: Interactions) -> None:
    assert len(continuation_split(synth_data, max_test=10).test_rows) == 10


def test_metrics_by_hand() -> None:
    # playlist 0 hides {1, 2}; playlist 1 hides {9}
    recs = np.array([[1, 5, 2, 6], [3, 4, 5, 6]])
    metrics = ranking_metrics(
        recs,
        hidden_indptr=np.array([0, 2, 3]),
        hidden_items=np.array([1, 2, 9]),
        n_items=10,
        item_popularity=np.arange(10),
    )
    dcg0 = 1 / math.log2(2) + 1 / math.log2(4)
    idcg0 = 1 / math.log2(2) + 1 / math.log2(3)
    assert metrics["r_precision"] == pytest.approx((1 / 2 + 0) / 2)
    assert metrics["ndcg@500"] == pytest.approx((dcg0 / idcg0 + 0) / 2)
    assert metrics["recall@50"] == pytest.approx((1.0 + 0) / 2)
    assert metrics["hr@10"] == pytest.approx(0.5)
    assert metrics["clicks"] == pytest.approx((0 + CLICKS_MISS) / 2)
    assert metrics["coverage@10"] == pytest.approx(6 / 10)


def test_padding_never_counts_as_a_hit() -> None:
    recs = np.array([[-1, -1]])
    metrics = ranking_metrics(
        recs,
        hidden_indptr=np.array([0, 1]),
        hidden_items=np.array([9]),
        n_items=10,
        item_popularity=np.ones(10),
    )
    assert metrics["hr@10"] == 0 and metrics["ndcg@500"] == 0
