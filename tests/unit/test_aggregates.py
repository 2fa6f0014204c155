"""Arm counters and per-user state, event by event."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from recsys.events.schemas import FeedbackEvent
from recsys.events.weights import FeedbackType
from recsys.experiments.aggregates import (
    ARM_COUNTERS,
    add_to_arm,
    add_to_user,
    apply_to_user,
    arms_of,
    total,
)


def event(kind: FeedbackType, track: str = "t1", listen_ms: int | None = None, **extra: str) -> FeedbackEvent:
    return FeedbackEvent(user_id="u", track_id=track, type=kind, listen_ms=listen_ms, **extra)  # type: ignore[arg-type]


def test_arm_counters() -> None:
    stats: dict[str, float] = {}
    user: dict[str, int] = {}
    for e in (
        event(FeedbackType.PLAY, listen_ms=30_000),
        event(FeedbackType.SKIP, listen_ms=5_000),
        event(FeedbackType.COMPLETE, listen_ms=200_000),
        event(FeedbackType.HATE),
    ):
        stats = add_to_arm(stats, e, new_user=not user, user_before=user)
        user = add_to_user(user, e)
    assert stats == {
        "users": 1,
        "events": 4,
        "plays": 3,
        "completes": 1,
        "skips": 1,
        "loves": 0,
        "hates": 1,
        "listen_ms": 235_000,
        "listen_s_sq": 235.0**2,  # one user: the square of their total
        "plays_sq": 9.0,
        "hates_sq": 1.0,  # one hate, three plays: what the delta method needs for hates per play
        "hates_plays": 3.0,
        "skips_sq": 1.0,
        "skips_plays": 3.0,
    }
    assert user == {"listen_ms": 235_000, "plays": 3, "skips": 1, "loves": 0, "hates": 1}
    assert total([stats, stats])["listen_ms"] == 470_000 and set(total([])) == set(ARM_COUNTERS)


def test_arm_counters_from_the_users_totals_given() -> None:
    """The stream worker passes the user's new totals it computed already: same counters."""
    stats: dict[str, float] = {}
    user: dict[str, int] = {}
    for e in (event(FeedbackType.COMPLETE, listen_ms=200_000), event(FeedbackType.LOVE)):
        after = add_to_user(user, e)
        given = add_to_arm(stats, e, new_user=not user, user_before=user, user_after=after)
        assert given == add_to_arm(stats, e, new_user=not user, user_before=user)
        stats, user = given, after
    assert stats["listen_s_sq"] == 200.0**2 and stats["loves"] == 1


def test_arm_names_the_version_and_variant_answered() -> None:
    assert (
        arms_of(event(FeedbackType.LOVE, model_version="2.2", variant="exp:treatment"))[0]
        == "2.2|exp:treatment"
    )
    assert arms_of(event(FeedbackType.LOVE))[0] == "unattributed|-"


def test_user_state_follows_love_hate_and_their_undo() -> None:
    state: dict[str, list[str]] = {}
    for e in (
        event(FeedbackType.LOVE, "a"),
        event(FeedbackType.HATE, "b"),
        event(FeedbackType.PLAY, "c", listen_ms=1),
        event(FeedbackType.LOVE, "a"),
        event(FeedbackType.UNHATE, "b"),
        event(FeedbackType.HATE, "d"),
        event(FeedbackType.SKIP, "e", listen_ms=1),
    ):
        state = apply_to_user(state, e)
    assert state == {"loved": ["a"], "hated": ["d"], "recent": [["c", "play", 1], ["e", "skip", 1]]}


def test_events_with_a_platform_or_country_also_count_in_that_slice_of_their_arm() -> None:
    event = FeedbackEvent(
        user_id="u",
        track_id="t",
        type=FeedbackType.LOVE,
        model_version="2.2",
        variant="v2.2:treatment",
        platform="ios",
        country="DE",
    )
    assert arms_of(event) == (
        "2.2|v2.2:treatment",
        "2.2|v2.2:treatment@platform=ios",
        "2.2|v2.2:treatment@country=DE",
    )
    assert arms_of(event.model_copy(update={"platform": None, "country": None})) == ("2.2|v2.2:treatment",)
    with pytest.raises(ValidationError):
        FeedbackEvent(user_id="u", track_id="t", type=FeedbackType.LOVE, platform="ios|web")


def test_an_arm_counted_before_a_product_sum_existed_never_gets_a_partial_one() -> None:
    """Counters from an older worker have users but no hate sums: adding events keeps them
    absent (the hate rate stays unjudged) instead of summing over new users only."""
    legacy = {"users": 5, "events": 20, "plays": 10, "hates": 2, "listen_ms": 50_000, "listen_s_sq": 900.0}
    after = add_to_arm(legacy, event(FeedbackType.HATE), new_user=True)
    assert "hates_sq" not in after and "hates_plays" not in after and after["hates"] == 3
    assert after["listen_s_sq"] == 900.0 and after["users"] == 6
    fresh = add_to_arm({}, event(FeedbackType.HATE), new_user=True)
    assert fresh["hates_sq"] == 1.0
    summed = total([after, fresh])
    assert "hates_sq" not in summed and summed["hates"] == 4 and summed["listen_s_sq"] == 900.0
    assert total([fresh, fresh])["hates_sq"] == 2.0
