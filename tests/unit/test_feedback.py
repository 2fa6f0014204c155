"""The one feedback weighting, shared by batch training and the stream processors."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.feedback import (
    DEFAULT_TRACK_MS,
    HATE_WEIGHT,
    LOVE_WEIGHT,
    SKIP_WEIGHT,
    FeedbackType,
    combine,
    event_weight,
    type_codes,
)


def fold(events: list[tuple[int, str, float]]) -> dict[int, float]:
    keys = np.array([e[0] for e in events], dtype=np.int64)
    codes = type_codes(np.array([e[1] for e in events]))
    fractions = np.array([e[2] for e in events])
    unique, weights = combine(keys=keys, codes=codes, fractions=fractions, order=np.arange(len(events)))
    return dict(zip(unique.tolist(), weights.tolist(), strict=True))


def test_plays_add_up_by_listened_fraction() -> None:
    assert fold([(1, "play", 0.5), (1, "play", 0.25), (1, "complete", 0)])[1] == pytest.approx(1.75)


def test_love_is_a_strong_positive_and_skip_a_weak_negative() -> None:
    weights = fold([(1, "love", 0), (2, "skip", 0), (3, "play", 1.0), (3, "skip", 0)])
    assert weights[1] == pytest.approx(LOVE_WEIGHT)
    assert weights[2] == pytest.approx(SKIP_WEIGHT) and SKIP_WEIGHT < 0
    assert weights[3] == pytest.approx(1.0 + SKIP_WEIGHT)


def test_hate_overrides_everything_until_unhated() -> None:
    weights = fold([(1, "love", 0), (1, "play", 1.0), (1, "hate", 0), (2, "hate", 0), (2, "unhate", 0)])
    assert weights[1] == pytest.approx(HATE_WEIGHT)
    assert weights[2] == pytest.approx(0.0)


def test_the_latest_state_event_wins() -> None:
    assert fold([(1, "love", 0), (1, "unlove", 0)])[1] == pytest.approx(0.0)
    assert fold([(1, "unlove", 0), (1, "love", 0)])[1] == pytest.approx(LOVE_WEIGHT)


def test_event_weight_of_single_events() -> None:
    assert event_weight(FeedbackType.PLAY, listen_ms=DEFAULT_TRACK_MS // 2) == pytest.approx(0.5)
    assert event_weight(FeedbackType.PLAY, listen_ms=10_000, duration_ms=5_000) == pytest.approx(1.0)
    assert event_weight(FeedbackType.SKIP) == SKIP_WEIGHT
    assert event_weight(FeedbackType.LOVE) == 0.0


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown feedback type 'like'"):
        type_codes(np.array(["play", "like"]))
