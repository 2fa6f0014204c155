"""How listening and love/hate feedback becomes an interaction weight.

This is the one place that decides it; the trainer and the stream processors
both call it, so a signal counts the same in batch and in the speed layer.

=========  =============================================  ==================
event      weight of one event                             meaning in ALS
=========  =============================================  ==================
play       ``PLAY_WEIGHT * listened fraction`` (0..1)      positive, graded
complete   ``PLAY_WEIGHT``                                 positive
skip       ``SKIP_WEIGHT`` (-0.25)                         weak dislike
love       sets the loved state: ``+LOVE_WEIGHT`` (4)      strong positive
hate       sets the hated state: ``HATE_WEIGHT`` (-4)      known dislike
unlove     clears the loved state
unhate     clears the hated state
=========  =============================================  ==================

Per (user, track) the play, complete and skip weights add up; a loved track
gets ``LOVE_WEIGHT`` on top; a hated track's weight is ``HATE_WEIGHT`` whatever
else happened, since a hated song must never be recommended again; a pair whose
weight comes to 0 is no interaction. implicit reads a negative value ``v`` as
"disliked, with confidence ``alpha * |v|``".

:func:`combine` is that rule over a whole event log (training);
:func:`track_weights` applies it to listeners' events (the speed layer).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

import numpy as np

PLAY_WEIGHT = 1.0
SKIP_WEIGHT = -0.25
LOVE_WEIGHT = 4.0
HATE_WEIGHT = -4.0
DEFAULT_TRACK_MS = 210_000
"""Track length assumed when a play event does not say (the median pop song)."""


class FeedbackType(StrEnum):
    """Kinds of feedback a client can send."""

    PLAY = "play"
    SKIP = "skip"
    COMPLETE = "complete"
    LOVE = "love"
    HATE = "hate"
    UNLOVE = "unlove"
    UNHATE = "unhate"


_TYPE_CODES = {t.value: i for i, t in enumerate(FeedbackType)}
_TYPES = {t.value: t for t in FeedbackType}


def type_codes(types: np.ndarray) -> np.ndarray:
    """Encode an array of event type names; raises ``ValueError`` naming an unknown type."""
    uniques, inverse = np.unique(types.astype(str), return_inverse=True)
    unknown = [u for u in uniques if u not in _TYPE_CODES]
    if unknown:
        raise ValueError(f"unknown feedback type {str(unknown[0])!r}; expected one of {list(_TYPE_CODES)}")
    lut = np.array([_TYPE_CODES[u] for u in uniques], dtype=np.int8)
    return lut[inverse]


def listened_fraction(listen_ms: np.ndarray, duration_ms: np.ndarray | None) -> np.ndarray:
    """Fraction of the track listened to, clipped to [0, 1]."""
    duration = (
        np.full(len(listen_ms), DEFAULT_TRACK_MS, dtype=np.float64)
        if duration_ms is None
        else np.where(duration_ms > 0, duration_ms, DEFAULT_TRACK_MS).astype(np.float64)
    )
    return np.clip(np.nan_to_num(listen_ms.astype(np.float64)) / duration, 0.0, 1.0)


def combine(
    *,
    keys: np.ndarray,
    codes: np.ndarray,
    fractions: np.ndarray,
    order: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold a log of events into one weight per key (a user/track pair).

    Parameters
    ----------
    keys : ndarray of int64
        Pair key of each event.
    codes : ndarray of int8
        Event type codes from :func:`type_codes`.
    fractions : ndarray of float
        Listened fraction of each event (used by ``play`` only).
    order : ndarray
        Event time or sequence number; the last love/unlove and hate/unhate win.

    Returns
    -------
    (unique_keys, weights)
    """
    code = {t: np.int8(_TYPE_CODES[t.value]) for t in FeedbackType}
    additive = np.where(codes == code[FeedbackType.PLAY], PLAY_WEIGHT * fractions, 0.0)
    additive = np.where(codes == code[FeedbackType.COMPLETE], PLAY_WEIGHT, additive)
    additive = np.where(codes == code[FeedbackType.SKIP], SKIP_WEIGHT, additive)
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    weights = np.bincount(inverse, weights=additive, minlength=len(unique_keys))
    loved = _last_state(
        inverse, codes, order, code[FeedbackType.LOVE], code[FeedbackType.UNLOVE], len(unique_keys)
    )
    hated = _last_state(
        inverse, codes, order, code[FeedbackType.HATE], code[FeedbackType.UNHATE], len(unique_keys)
    )
    weights = np.where(loved, weights + LOVE_WEIGHT, weights)
    weights = np.where(hated, HATE_WEIGHT, weights)
    return unique_keys, weights.astype(np.float32)


def _last_state(
    inverse: np.ndarray, codes: np.ndarray, order: np.ndarray, on: np.int8, off: np.int8, n: int
) -> np.ndarray:
    """Per key, whether the latest of its on/off events is an ``on``."""
    relevant = np.flatnonzero((codes == on) | (codes == off))
    state = np.zeros(n, dtype=bool)
    if len(relevant) == 0:
        return state
    ranked = relevant[np.lexsort((order[relevant], inverse[relevant]))]
    # after sorting by (key, order) the last occurrence of each key is its latest event
    last = np.ones(len(ranked), dtype=bool)
    last[:-1] = inverse[ranked][1:] != inverse[ranked][:-1]
    final = ranked[last]
    state[inverse[final]] = codes[final] == on
    return state


class FeedbackLike(Protocol):
    """What the weighting reads of an event (a :class:`~recsys.events.schemas.FeedbackEvent` is one)."""

    @property
    def track_id(self) -> str: ...

    @property
    def type(self) -> FeedbackType: ...

    @property
    def listen_ms(self) -> int | None: ...

    @property
    def duration_ms(self) -> int | None: ...


class Feedback(NamedTuple):
    """One event reduced to what its weight depends on."""

    track_id: str
    type: FeedbackType
    listen_ms: int | None = None
    duration_ms: int | None = None


def track_weights(listeners: Iterable[Iterable[FeedbackLike]]) -> list[dict[str, float]]:
    """Each listener's events folded into one weight per track, by :func:`combine`.

    Parameters
    ----------
    listeners : iterable of iterables of FeedbackLike
        Per listener, their events in the order they happened (the last love/unlove and
        hate/unhate of a track win).

    Returns
    -------
    list of dict of str to float
        Per listener, the weight of each track: the float32 values :func:`combine` gives
        training. Tracks whose weight comes to 0 are left out, as training leaves them out.
    """
    pairs: dict[tuple[int, str], int] = {}
    keys: list[int] = []
    codes: list[int] = []
    listen: list[int] = []
    duration: list[int] = []  # 0: not given
    count = 0
    for row, events in enumerate(listeners):
        count += 1
        for event in events:
            keys.append(pairs.setdefault((row, event.track_id), len(pairs)))
            codes.append(_TYPE_CODES[event.type])
            listen.append(event.listen_ms or 0)
            duration.append(event.duration_ms or 0)
    out: list[dict[str, float]] = [{} for _ in range(count)]
    if not keys:
        return out
    unique_keys, weights = combine(
        keys=np.array(keys, dtype=np.int64),
        codes=np.array(codes, dtype=np.int8),
        fractions=listened_fraction(np.array(listen, np.float64), np.array(duration, np.float64)),
        order=np.arange(len(keys)),
    )
    owners = list(pairs)
    for key, weight in zip(unique_keys.tolist(), weights.tolist(), strict=True):
        if weight != 0:
            row, track = owners[key]
            out[row][track] = weight
    return out


def to_record(event: FeedbackLike) -> list[str | int]:
    """The compact JSON form of a play, complete or skip kept in a listener's state.

    ``[track_id, type, listen_ms]``, with ``duration_ms`` appended when the event gave it.
    """
    record: list[str | int] = [event.track_id, event.type.value, int(event.listen_ms or 0)]
    if event.duration_ms is not None:
        record.append(int(event.duration_ms))
    return record


def from_record(record: str | list[Any]) -> Feedback:
    """The event a :func:`to_record` entry (as read back from JSON) stands for.

    A bare track id, the form of state written before listening records were kept, reads
    as a ``complete``.
    """
    if isinstance(record, str):
        return Feedback(record, FeedbackType.COMPLETE, 0)
    return Feedback(record[0], _TYPES[record[1]], record[2], record[3] if len(record) > 3 else None)
