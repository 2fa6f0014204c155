"""Online aggregates of feedback: per model version and variant (arm), and per user.

Pure functions over plain dicts, so the stream processors can keep them in their tables
(JSON values) and the experiment analysis can read them back.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

from recsys.events import FeedbackEvent
from recsys.feedback import FeedbackType

UNATTRIBUTED = "unattributed"
USER_TOTALS = ("listen_ms", "plays", "skips", "loves", "hates")
"""What is kept per user and arm (in the user's state), for statistics over users."""
SQUARES = {"listen_ms": "listen_s_sq", "plays": "plays_sq"}
"""Per arm, the sum over its users of the square of a per-user total (listening in seconds):
with the sums and the user count, the per-user mean and variance, so experiment statistics
are over users (the unit of randomisation) without keeping a list of them."""
ARM_COUNTERS = (
    "users",
    "events",
    "plays",
    "completes",
    "skips",
    "loves",
    "hates",
    "listen_ms",
    *SQUARES.values(),
)
RECENT_PLAYS = 50


def arm_of(event: FeedbackEvent) -> str:
    """``version|variant`` of the recommendation the event answers (``unattributed|-`` if none)."""
    return f"{event.model_version or UNATTRIBUTED}|{event.variant or '-'}"


SLICES = ("platform", "country")
"""Event fields that split each arm into slices (``version|variant@platform=ios``)."""
SLICE_MARK = "@"


def arms_of(event: FeedbackEvent) -> tuple[str, ...]:
    """The arm the event counts in, and the arm's slice for each of :data:`SLICES` it carries."""
    return _arms(event.model_version, event.variant, event.platform, event.country)


@functools.lru_cache(maxsize=4096)
def _arms(
    version: str | None, variant: str | None, platform: str | None, country: str | None
) -> tuple[str, ...]:
    arm = f"{version or UNATTRIBUTED}|{variant or '-'}"
    values = zip(SLICES, (platform, country), strict=True)
    return (arm, *(f"{arm}{SLICE_MARK}{name}={value}" for name, value in values if value))


def add_to_arm(
    stats: Mapping[str, float],
    event: FeedbackEvent,
    *,
    new_user: bool,
    user_before: Mapping[str, int] | None = None,
    user_after: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """Counters of an arm after one more event.

    Parameters
    ----------
    stats : mapping
        The arm's counters so far.
    event : FeedbackEvent
        The event.
    new_user : bool
        The first event of this user in the arm.
    user_before : mapping, optional
        The user's totals in this arm before the event (:func:`add_to_user`); the square
        sums follow the change of the user's totals.
    user_after : mapping, optional
        ``add_to_user(user_before, event)``, when the caller has it already.
    """
    out = {name: stats.get(name, 0) for name in ARM_COUNTERS}
    out["users"] += int(new_user)
    out["events"] += 1
    out["completes"] += int(event.type is FeedbackType.COMPLETE)
    before = user_before or {}
    after = user_after if user_after is not None else add_to_user(before, event)
    for name in USER_TOTALS:
        out[name] += after[name] - before.get(name, 0)
    for name, square in SQUARES.items():
        scale = 1000.0 if name == "listen_ms" else 1.0
        out[square] += (after.get(name, 0) / scale) ** 2 - (before.get(name, 0) / scale) ** 2
    return out


def add_to_user(totals: Mapping[str, int], event: FeedbackEvent) -> dict[str, int]:
    """One user's totals in one arm after one more event."""
    out = {name: int(totals.get(name, 0)) for name in USER_TOTALS}
    kind = event.type
    if kind in (FeedbackType.PLAY, FeedbackType.COMPLETE, FeedbackType.SKIP):
        out["listen_ms"] += event.listen_ms or 0
        out["plays"] += 1
    if kind is FeedbackType.SKIP:
        out["skips"] += 1
    elif kind is FeedbackType.LOVE:
        out["loves"] += 1
    elif kind is FeedbackType.HATE:
        out["hates"] += 1
    return out


def total(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Sum of several partial counters of one arm."""
    out: dict[str, float] = dict.fromkeys(ARM_COUNTERS, 0)
    for part in parts:
        for name in ARM_COUNTERS:
            out[name] += part.get(name, 0)
    return out


def apply_to_user(state: Mapping[str, list[str]], event: FeedbackEvent) -> dict[str, list[str]]:
    """A user's loved and hated tracks and recent plays after one more event."""
    loved, hated = list(state.get("loved", [])), list(state.get("hated", []))
    recent = list(state.get("recent", []))
    track, kind = event.track_id, event.type
    if kind in (FeedbackType.LOVE, FeedbackType.UNLOVE):
        loved = [t for t in loved if t != track] + ([track] if kind is FeedbackType.LOVE else [])
    elif kind in (FeedbackType.HATE, FeedbackType.UNHATE):
        hated = [t for t in hated if t != track] + ([track] if kind is FeedbackType.HATE else [])
    elif kind in (FeedbackType.PLAY, FeedbackType.COMPLETE):
        recent = [*recent, track][-RECENT_PLAYS:]
    return {"loved": loved, "hated": hated, "recent": recent}
