"""Fake-account attacks and honest listeners as feedback event logs, to measure account trust.

Used by ``benchmarks/shilling.py`` and the tests. An event log here has the columns the
trainer reads (``user_id, track_id, type, listen_ms, ts, received_ms``); times are epoch
milliseconds, ``received_ms`` the service's and ``ts`` the client's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recsys.data.idmap import IdMap
from recsys.data.interaction_table import Interactions
from recsys.events.weights import DEFAULT_TRACK_MS, FeedbackType
from recsys.trust.policy import DAY_MS

DEFAULT_CUT_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z: the newest event of the simulated logs."""
HONEST_MAX_AGE_DAYS = 730.0
"""Honest accounts open at a constant rate over the two years before the cut."""
COLD_QUANTILE = 0.05
"""A target is drawn among the least popular 5% of the tracks that have any listener."""
ATTACK_STREAM, LISTENER_STREAM, TARGET_STREAM = 1, 2, 3
"""Each draw has its own random stream of a seed, independent of the caller's own draws."""


@dataclass(frozen=True)
class Attack:
    """One fake-account campaign: each account loves and completes the target among popular fillers."""

    accounts: int = 300
    fillers: int = 10
    """Popular tracks each account completes besides the target."""
    filler_pool: int = 0
    """0: every account completes the ``fillers`` most popular tracks; else each draws its
    own fillers among the ``filler_pool`` most popular (no two accounts alike)."""
    padding: int = 0
    """Partial plays of random tracks (by popularity) per account: a made-up history."""
    window_days: float = 1.0
    """The accounts' events are received within this many days before the cut."""
    backdate_days: float = 0.0
    """Client ``ts`` of every event claims this many days earlier than it was received."""
    sleeper_days: float = 0.0
    """When positive, the accounts opened this long before the cut with their padding plays
    and waited (aged accounts); the attack itself still comes within ``window_days``."""
    seed: int = 0


def attack_events(
    attack: Attack, *, target: int, popularity: np.ndarray, item_ids: IdMap, cut_ms: int = DEFAULT_CUT_MS
) -> pa.Table:
    """The campaign's events against ``target`` (a track index of ``item_ids``).

    Parameters
    ----------
    attack : Attack
    target : int
    popularity : ndarray
        Listeners per track (ranks the fillers, draws the padding).
    item_ids : IdMap
    cut_ms : int
        The newest event's time.

    Returns
    -------
    pyarrow.Table
        An event log (one ``love`` and one ``complete`` of the target, a ``complete`` per
        filler and a ``play`` per padding track, per account).
    """
    rng = np.random.default_rng([attack.seed, ATTACK_STREAM])
    ranked = np.argsort(-popularity, kind="stable")
    ranked = ranked[ranked != target]
    n, f = attack.accounts, attack.fillers
    if attack.filler_pool:
        pool = ranked[: max(attack.filler_pool, f)]
        fillers = np.argsort(rng.random((n, len(pool))), axis=1)[:, :f]
        filler_tracks = pool[fillers]
    else:
        filler_tracks = np.broadcast_to(ranked[:f], (n, f))
    weights = popularity / popularity.sum()
    padding = rng.choice(len(popularity), size=(n, attack.padding), p=weights)
    account = np.arange(n)
    tracks = np.concatenate(
        [np.full((n, 2), target), filler_tracks, padding], axis=1
    )  # love, complete, fillers, padding
    kinds = np.array(
        [FeedbackType.LOVE, FeedbackType.COMPLETE]
        + [FeedbackType.COMPLETE] * f
        + [FeedbackType.PLAY] * attack.padding
    )
    listen = np.concatenate(
        [
            np.zeros((n, 1)),
            np.full((n, 1 + f), float(DEFAULT_TRACK_MS)),
            rng.uniform(0.1, 0.9, (n, attack.padding)) * DEFAULT_TRACK_MS,
        ],
        axis=1,
    )
    received = cut_ms - rng.uniform(0, attack.window_days * DAY_MS, tracks.shape)
    if attack.sleeper_days > 0 and attack.padding:
        opened = cut_ms - attack.sleeper_days * DAY_MS
        received[:, -attack.padding :] = opened + rng.uniform(0, DAY_MS, (n, attack.padding))
    users = np.array([f"fake{attack.seed}-{a}" for a in account])
    return _events(
        users=np.repeat(users, tracks.shape[1]),
        tracks=np.array(item_ids.externals(tracks.ravel())),
        kinds=np.tile(kinds, n),
        listen_ms=listen.ravel(),
        received_ms=received.ravel().astype(np.int64),
        ts=(received.ravel() - attack.backdate_days * DAY_MS).astype(np.int64),
    )


def listener_events(
    data: Interactions,
    rows: np.ndarray,
    *,
    cut_ms: int = DEFAULT_CUT_MS,
    max_age_days: float = HONEST_MAX_AGE_DAYS,
    seed: int = 0,
) -> pa.Table:
    """``rows`` of ``data`` as honest listeners: a ``complete`` of each of their tracks.

    Each account opens at a uniformly drawn time within ``max_age_days`` before the cut
    (its first event) and its other events fall uniformly between then and the cut.
    Listener ids are the rows' ids.
    """
    rng = np.random.default_rng([seed, LISTENER_STREAM])
    is_listener = np.zeros(data.n_rows, dtype=bool)
    is_listener[rows] = True
    picked = np.flatnonzero(is_listener[data.rows] & (data.weights > 0))
    owner = data.rows[picked]
    opened = cut_ms - rng.uniform(0, max_age_days * DAY_MS, data.n_rows)
    received = opened[owner] + rng.random(len(picked)) * (cut_ms - opened[owner])
    first = np.unique(owner, return_index=True)[1]
    received[first] = opened[owner[first]]
    return _events(
        users=np.array(data.row_ids.externals(owner)),
        tracks=np.array(data.item_ids.externals(data.items[picked])),
        kinds=np.full(len(picked), FeedbackType.COMPLETE),
        listen_ms=np.full(len(picked), float(DEFAULT_TRACK_MS)),
        received_ms=received.astype(np.int64),
        ts=received.astype(np.int64),
    )


def take_rows(data: Interactions, rows: np.ndarray) -> Interactions:
    """The table of ``rows`` only (renumbered in the given order), on the same catalogue."""
    position = np.full(data.n_rows, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    kept = np.flatnonzero(position[data.rows] >= 0)
    return Interactions(
        position[data.rows[kept]].astype(np.int32),
        data.items[kept],
        data.weights[kept],
        IdMap(data.row_ids.ids.take(pa.array(rows))),
        data.item_ids,
        ts=None if data.ts is None else data.ts[kept],
        track_meta=data.track_meta,
        lineage=data.lineage,
    )


def cold_track(popularity: np.ndarray, *, seed: int = 0) -> int:
    """A seeded random track among the least popular :data:`COLD_QUANTILE` of those with listeners."""
    held = np.flatnonzero(popularity > 0)
    cold = held[popularity[held] <= np.quantile(popularity[held], COLD_QUANTILE)]
    return int(np.random.default_rng([seed, TARGET_STREAM]).choice(cold))


def _events(
    *,
    users: np.ndarray,
    tracks: np.ndarray,
    kinds: np.ndarray,
    listen_ms: np.ndarray,
    received_ms: np.ndarray,
    ts: np.ndarray,
) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "track_id": pa.array(tracks, pa.string()),
            "type": pa.array([str(k) for k in kinds], pa.string()),
            "listen_ms": pa.array(listen_ms, pa.float64()),
            "ts": pa.array(ts, pa.int64()),
            "received_ms": pa.array(received_ms, pa.int64()),
        }
    )
