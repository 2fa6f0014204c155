"""The one feedback weighting, shared by batch training and the stream processors."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from recsys.events.schemas import FeedbackEvent
from recsys.events.weights import (
    DEFAULT_TRACK_MS,
    HATE_WEIGHT,
    LOVE_WEIGHT,
    SKIP_WEIGHT,
    Feedback,
    FeedbackLike,
    FeedbackType,
    combine,
    from_record,
    listened_fraction,
    to_record,
    track_weights,
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


def weights_of(events: Sequence[FeedbackLike]) -> dict[str, float]:
    return track_weights([events])[0]


def test_track_weights_of_single_events() -> None:
    assert weights_of([Feedback("a", FeedbackType.PLAY, DEFAULT_TRACK_MS // 2)]) == {"a": 0.5}
    assert weights_of([Feedback("a", FeedbackType.PLAY, 10_000, 5_000)]) == {"a": 1.0}
    assert weights_of([Feedback("a", FeedbackType.PLAY, 1_000)]) == {
        "a": pytest.approx(1_000 / DEFAULT_TRACK_MS)
    }
    assert weights_of([Feedback("a", FeedbackType.SKIP, 2_000)]) == {"a": SKIP_WEIGHT}
    assert weights_of([Feedback("a", FeedbackType.LOVE)]) == {"a": LOVE_WEIGHT}


def test_track_weights_leave_out_what_comes_to_nothing() -> None:
    events = [
        Feedback("a", FeedbackType.LOVE),
        Feedback("a", FeedbackType.UNLOVE),
        Feedback("b", FeedbackType.COMPLETE, 1),
        *[Feedback("b", FeedbackType.SKIP, 1)] * 4,
        Feedback("c", FeedbackType.HATE),
    ]
    assert weights_of(events) == {"c": HATE_WEIGHT}


@pytest.mark.parametrize("seed", range(5))
def test_track_weights_are_the_training_weights_of_one_listener(seed: int) -> None:
    """The same rule as :func:`combine` over a log, in the order the events happened."""
    rng = np.random.default_rng(seed)
    kinds = list(FeedbackType)
    events = [
        Feedback(
            f"t{rng.integers(6)}",
            kinds[int(rng.integers(len(kinds)))],
            int(rng.integers(0, 400_000)),
            int(rng.integers(1, 400_000)) if rng.random() < 0.5 else None,
        )
        for _ in range(int(rng.integers(1, 80)))
    ]
    tracks = sorted({e.track_id for e in events})
    unique, weights = combine(
        keys=np.array([tracks.index(e.track_id) for e in events], np.int64),
        codes=type_codes(np.array([e.type.value for e in events])),
        fractions=listened_fraction(
            np.array([e.listen_ms for e in events], np.float64),
            np.array([e.duration_ms or 0 for e in events], np.float64),
        ),
        order=np.arange(len(events)),
    )
    expected = {tracks[k]: w for k, w in zip(unique.tolist(), weights.tolist(), strict=True) if w != 0}
    assert weights_of(events) == expected


def test_track_weights_of_several_listeners_are_their_own() -> None:
    a = [Feedback("x", FeedbackType.LOVE), Feedback("y", FeedbackType.PLAY, 1_000)]
    b = [Feedback("x", FeedbackType.HATE), Feedback("x", FeedbackType.COMPLETE, 1)]
    assert track_weights([a, [], b]) == [weights_of(a), {}, weights_of(b)]
    assert weights_of(b) == {"x": HATE_WEIGHT}
    assert track_weights([]) == [] and track_weights([[]]) == [{}]


def test_track_weights_read_feedback_events() -> None:
    events = [
        FeedbackEvent(
            user_id="u", track_id="a", type=FeedbackType.PLAY, listen_ms=60_000, duration_ms=120_000
        ),
        FeedbackEvent(user_id="u", track_id="a", type=FeedbackType.LOVE),
    ]
    assert weights_of(events) == {"a": 0.5 + LOVE_WEIGHT}


def test_records_stand_for_their_events() -> None:
    play = FeedbackEvent(
        user_id="u", track_id="a", type=FeedbackType.PLAY, listen_ms=1_000, duration_ms=9_000
    )
    skip = FeedbackEvent(user_id="u", track_id="b", type=FeedbackType.SKIP, listen_ms=0)
    assert to_record(play) == ["a", "play", 1_000, 9_000] and to_record(skip) == ["b", "skip", 0]
    assert from_record(json.loads(json.dumps(to_record(play)))) == Feedback(
        "a", FeedbackType.PLAY, 1_000, 9_000
    )
    assert from_record(["b", "skip", 0]) == Feedback("b", FeedbackType.SKIP, 0, None)
    assert from_record("c") == Feedback("c", FeedbackType.COMPLETE, 0)  # a bare track id


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown feedback type 'like'"):
        type_codes(np.array(["play", "like"]))
