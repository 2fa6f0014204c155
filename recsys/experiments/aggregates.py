"""Online aggregates of feedback: per model version and variant (arm), and per user.

Pure functions over plain dicts, so the stream processors can keep them in their tables
(JSON values) and the experiment analysis can read them back.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from recsys.events.schemas import LISTENING_TYPES, FeedbackEvent
from recsys.events.weights import FeedbackType, to_record
from recsys.registry.plan import INTERLEAVED

UNATTRIBUTED = "unattributed"
USER_TOTALS = ("listen_ms", "plays", "skips", "loves", "hates")
"""What is kept per user and arm (in the user's state), for statistics over users."""
PRODUCTS: dict[str, tuple[str, str]] = {
    "listen_s_sq": ("listen_ms", "listen_ms"),
    "plays_sq": ("plays", "plays"),
    "hates_sq": ("hates", "hates"),
    "hates_plays": ("hates", "plays"),
    "skips_sq": ("skips", "skips"),
    "skips_plays": ("skips", "plays"),
}
"""Per arm, the sum over its users of the product of two per-user totals (listening in
seconds). With the sums and the user count they give the per-user mean and variance of
listening, and what the delta method needs for a rate over users such as hates per play
(sums of numerator and denominator squared and multiplied), so experiment statistics are
over users, the unit of randomisation, without keeping a list of them."""
SCALE = {"listen_ms": 1000.0}
"""A per-user total divided by this before it is multiplied (listening in seconds)."""
ARM_COUNTERS = (
    "users",
    "events",
    "plays",
    "completes",
    "skips",
    "loves",
    "hates",
    "listen_ms",
    *PRODUCTS,
)
RECENT_PLAYS = 50
"""Plays, completes and skips a user's state keeps (:func:`recsys.events.weights.to_record`), for
the speed layer's fold-in."""


SLICES = ("platform", "country")
"""Event fields that split each arm into slices (``version|variant@platform=ios``)."""
SLICE_MARK = "@"


def arms_of(event: FeedbackEvent) -> tuple[str, ...]:
    """The arm the event counts in, and the arm's slice for each of :data:`SLICES` it carries.

    The arm is ``version|variant`` of the recommendation the event answers (``unattributed|-``
    if none).
    """
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

    An arm counted before a product sum existed (it has users but not that sum) never gets
    it: a sum over only the users seen since would be wrong, while an absent one leaves the
    metric that needs it unjudged (:func:`recsys.experiments.analysis.ratio_variance`).
    """
    out = {name: stats.get(name, 0) for name in ARM_COUNTERS if name in stats or not _lacks(stats, name)}
    out["users"] += int(new_user)
    out["events"] += 1
    out["completes"] += int(event.type is FeedbackType.COMPLETE)
    before = user_before or {}
    after = user_after if user_after is not None else add_to_user(before, event)
    for name in USER_TOTALS:
        out[name] += after[name] - before.get(name, 0)
    for name, (a, b) in PRODUCTS.items():
        if name in out:
            out[name] += _product(after, a, b) - _product(before, a, b)
    return out


def _lacks(stats: Mapping[str, float], name: str) -> bool:
    """An arm that already counts users but was counted without product sum ``name``."""
    return name in PRODUCTS and name not in stats and stats.get("users", 0) > 0


def _product(totals: Mapping[str, int], a: str, b: str) -> float:
    return (totals.get(a, 0) / SCALE.get(a, 1.0)) * (totals.get(b, 0) / SCALE.get(b, 1.0))


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
    """Sum of several partial counters of one arm (a product sum that any part lacks is left
    out: a sum over some of the arm's users only would be wrong)."""
    out: dict[str, float] = dict.fromkeys(ARM_COUNTERS, 0)
    lacking: set[str] = set()
    for part in parts:
        for name in ARM_COUNTERS:
            out[name] += part.get(name, 0)
            if _lacks(part, name):
                lacking.add(name)
        for name, value in credits_of(part).items():  # interleaved arms only
            out[name] = out.get(name, 0) + value
    for name in lacking:
        del out[name]
    return out


def apply_to_user(state: Mapping[str, Any], event: FeedbackEvent) -> dict[str, list[Any]]:
    """A user's loved and hated tracks and recent plays, completes and skips after one more event."""
    loved, hated = list(state.get("loved", [])), list(state.get("hated", []))
    recent = list(state.get("recent", []))
    track, kind = event.track_id, event.type
    if kind in (FeedbackType.LOVE, FeedbackType.UNLOVE):
        loved = [t for t in loved if t != track] + ([track] if kind is FeedbackType.LOVE else [])
    elif kind in (FeedbackType.HATE, FeedbackType.UNHATE):
        hated = [t for t in hated if t != track] + ([track] if kind is FeedbackType.HATE else [])
    elif kind in LISTENING_TYPES:
        recent = [*recent, to_record(event)][-RECENT_PLAYS:]
    return {"loved": loved, "hated": hated, "recent": recent}


CREDITED_USERS, LISTEN_SHARE, LISTEN_SHARE_SQ = "credited_users", "listen_share", "listen_share_sq"
CREDIT_COUNTERS = (CREDITED_USERS, LISTEN_SHARE, LISTEN_SHARE_SQ)
"""What the arm ``version|NAME:interleave`` of an interleaving experiment keeps besides
:data:`ARM_COUNTERS`, over the experiment's users with any credited listening: how many of
them the version earned their first credited listening (summed over the versions: each such
user once), and the sums of each user's share ``s`` of their credited listening that went to
this version, and of its square. A user's preference for the version, ``d = (L_v - L_rest) /
(L_v + L_rest)``, is ``2 s - 1``; a user with nothing credited to the version has ``s = 0`` and
adds nothing to its sums, so the arm never needs to know of them. From these three numbers,
the experiment's sum of ``d`` and of ``d**2`` over users follow
(:func:`~recsys.experiments.interleaving.preference`)."""


def is_interleaved(variant: str | None) -> bool:
    """Whether ``variant`` labels lists merged from two versions (``NAME:interleave``)."""
    return variant is not None and variant.endswith(INTERLEAVED)


def credited_listening(by_arm: Mapping[str, Mapping[str, int]], variant: str) -> dict[str, int]:
    """One user's listening (ms) credited to each version in the interleaving experiment
    ``variant``, from their totals per arm (``version|variant``; slices are left out)."""
    suffix = f"|{variant}"
    return {
        arm[: -len(suffix)]: int(totals.get("listen_ms", 0))
        for arm, totals in by_arm.items()
        if arm.endswith(suffix)
    }


def credit_changes(before: Mapping[str, int], version: str, listen_ms: int) -> dict[str, dict[str, float]]:
    """How the :data:`CREDIT_COUNTERS` of each version's arm change when one user's listening
    credited to ``version`` grows by ``listen_ms``.

    A user's preference is judged on credited listening time rather than credited plays: a
    skip after five seconds is a play as much as a track heard to the end, so a ranker that
    puts forward tracks users skip would earn plays but not listening; listening is also what
    the A/B ladder that follows judges. Normalising by the user's own listening (``d`` lies in
    -1..1) keeps a heavy listener from outweighing everyone else.

    The user's old shares are taken out and the new ones put in, so a change of their
    listening replaces their contribution instead of adding to it.

    Parameters
    ----------
    before : mapping
        Version -> the user's credited listening (ms) in this experiment before the event
        (:func:`credited_listening`).
    version : str
        The version that contributed the track.
    listen_ms : int
        Listening the event adds.

    Returns
    -------
    dict
        Version -> the change of each of its counters (versions the user has no listening
        credited to are untouched).
    """
    if listen_ms <= 0:
        return {}
    after = {**before, version: before.get(version, 0) + listen_ms}
    old_total, new_total = sum(before.values()), sum(after.values())
    changes = {}
    for name, listened in after.items():
        old = before.get(name, 0) / old_total if old_total else 0.0
        new = listened / new_total
        changes[name] = {
            CREDITED_USERS: float(old_total == 0 and name == version),
            LISTEN_SHARE: new - old,
            LISTEN_SHARE_SQ: new**2 - old**2,
        }
    return changes


def add_credits(stats: Mapping[str, float], change: Mapping[str, float]) -> dict[str, float]:
    """An arm's counters with a change of its :data:`CREDIT_COUNTERS` added."""
    out = dict(stats)
    for name, value in change.items():
        out[name] = out.get(name, 0) + value
    return out


def credits_of(stats: Mapping[str, float]) -> dict[str, float]:
    """The :data:`CREDIT_COUNTERS` an arm holds (none for arms outside interleaving)."""
    return {name: stats[name] for name in CREDIT_COUNTERS if name in stats}
