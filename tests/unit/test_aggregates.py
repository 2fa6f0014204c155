"""Arm counters and per-user state, event by event."""

from __future__ import annotations

from recsys.aggregates import ARM_COUNTERS, add_to_arm, apply_to_user, arm_of, total
from recsys.events import FeedbackEvent
from recsys.feedback import FeedbackType


def event(kind: FeedbackType, track: str = "t1", listen_ms: int | None = None, **extra: str) -> FeedbackEvent:
    return FeedbackEvent(user_id="u", track_id=track, type=kind, listen_ms=listen_ms, **extra)  # type: ignore[arg-type]


def test_arm_counters() -> None:
    stats: dict[str, int] = {}
    stats = add_to_arm(stats, event(FeedbackType.PLAY, listen_ms=30_000), new_user=True)
    stats = add_to_arm(stats, event(FeedbackType.SKIP, listen_ms=5_000), new_user=False)
    stats = add_to_arm(stats, event(FeedbackType.COMPLETE, listen_ms=200_000), new_user=False)
    stats = add_to_arm(stats, event(FeedbackType.HATE), new_user=False)
    assert stats == {
        "users": 1,
        "events": 4,
        "plays": 3,
        "completes": 1,
        "skips": 1,
        "loves": 0,
        "hates": 1,
        "listen_ms": 235_000,
    }
    assert total([stats, stats])["listen_ms"] == 470_000 and set(total([])) == set(ARM_COUNTERS)


def test_arm_names_the_version_and_variant_answered() -> None:
    assert (
        arm_of(event(FeedbackType.LOVE, model_version="2.2", variant="exp:treatment")) == "2.2|exp:treatment"
    )
    assert arm_of(event(FeedbackType.LOVE)) == "unattributed|-"


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
    assert state == {"loved": ["a"], "hated": ["d"], "recent": ["c"]}
