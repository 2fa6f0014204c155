"""Fake accounts against training, on generated data: account trust takes the attack's exposure away."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.data.formats import load
from recsys.data.interaction_table import Interactions
from recsys.data.merge import with_feedback
from recsys.data.synth import SynthSpec, generate, to_interactions
from recsys.evaluation.exposure import EXPOSURE_K, exposure_lift, exposure_slots
from recsys.evaluation.protocol import prepare
from recsys.models.als import ALSModel, ALSParams
from recsys.models.device import Device
from recsys.trust.accounts import AccountTrust, assess
from recsys.trust.policy import DAY_MS, TrustParams
from recsys.trust.simulation import (
    DEFAULT_CUT_MS,
    Attack,
    attack_events,
    cold_track,
    listener_events,
    take_rows,
)

PARAMS = ALSParams(factors=16, iterations=5, knn_neighbours=50)
"""The default model's shape (ALS blended with item-kNN), small."""
LISTENER_SHARE = 0.3
MIN_LIFT = 10.0
"""An attack on this data must lift the target at least this much without defense, and
trust must cut that lift at least this much."""


@dataclass
class World:
    """Playlists, honest listeners and a cold target track."""

    base: Interactions
    honest: pa.Table
    popularity: np.ndarray
    target: int
    seed: int


def world(playlists: int, seed: int) -> World:
    data = to_interactions(generate(SynthSpec(playlists=playlists, tracks=2 * playlists, seed=seed)))
    listeners = np.flatnonzero(np.random.default_rng(seed).random(data.n_rows) < LISTENER_SHARE)
    popularity = np.bincount(data.items, minlength=data.n_items)
    return World(
        base=take_rows(data, np.setdiff1d(np.arange(data.n_rows), listeners)),
        honest=listener_events(data, listeners, seed=seed),
        popularity=popularity,
        target=cold_track(popularity, seed=seed),
        seed=seed,
    )


def events(w: World, attack: Attack | None, folder: Path) -> Interactions:
    """The feedback log as the trainer reads it (through a Parquet file)."""
    table = w.honest
    if attack is not None:
        fake = attack_events(attack, target=w.target, popularity=w.popularity, item_ids=w.base.item_ids)
        table = pa.concat_tables([table, fake])
    path = folder / "feedback.parquet"
    pq.write_table(table, path)
    return load(path)


def target_slots(w: World, log: Interactions, trust: AccountTrust) -> int:
    """Top-20 slots of the target over the test playlists, trained as ``recsys train --feedback`` does."""
    merged, _ = with_feedback(w.base, log)
    prepared = prepare(merged, seed=w.seed, test_rows_below=w.base.n_rows)
    model = ALSModel(PARAMS, device=Device.CPU)
    model.fit(prepared.train, row_weights=trust.row_weights(w.base.n_rows) if trust.discounts else None)
    return exposure_slots(model.recommend(prepared.split.test_rows, prepared.train, EXPOSURE_K), w.target)


def lifts(w: World, attack: Attack, folder: Path) -> tuple[float, float]:
    """Exposure lift of the target without and with account trust."""
    clean, attacked = events(w, None, folder), events(w, attack, folder)
    out = []
    for params in (TrustParams(enabled=False), TrustParams()):
        before = target_slots(w, clean, assess(clean, params))
        after = target_slots(w, attacked, assess(attacked, params))
        out.append(exposure_lift(after, before))
    return out[0], out[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("playlists", "accounts"), [(800, 30), (1500, 100)])
def test_trust_cuts_the_lift_of_fresh_fake_accounts(
    tmp_path: Path, seed: int, playlists: int, accounts: int
) -> None:
    w = world(playlists, seed)
    off, on = lifts(w, Attack(accounts=accounts, seed=seed), tmp_path)
    assert off >= MIN_LIFT, f"the attack did not work without defense (lift {off})"
    assert off / on >= MIN_LIFT, f"lift {off} without trust, {on} with it"


@pytest.mark.parametrize(
    "attack",
    [
        Attack(accounts=50, fillers=10, filler_pool=100, padding=5, window_days=3),
        Attack(accounts=50, fillers=3),
        Attack(accounts=50, backdate_days=90),
    ],
    ids=["random-fillers-padded", "three-fillers", "backdated"],
)
def test_trust_is_not_tuned_to_one_attack_shape(tmp_path: Path, attack: Attack) -> None:
    w = world(1000, seed=3)
    off, on = lifts(w, attack, tmp_path)
    assert off >= MIN_LIFT, f"the attack did not work without defense (lift {off})"
    assert off / on >= MIN_LIFT, f"lift {off} without trust, {on} with it"


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("playlists", [800, 3000])
def test_honest_listeners_keep_their_weight(tmp_path: Path, seed: int, playlists: int) -> None:
    w = world(playlists, seed)
    log = events(w, Attack(accounts=40, seed=seed), tmp_path)
    trust = assess(log, TrustParams())
    fake = np.char.startswith(np.array(log.row_ids.ids.to_pylist()), "fake")
    first = log.row_meta.column("first_ms").to_numpy() if log.row_meta is not None else None
    assert first is not None
    age_days = (DEFAULT_CUT_MS - first) / DAY_MS
    settled = ~fake & (age_days >= TrustParams().full_age_days + 1)
    assert settled.sum() > 0.9 * (~fake).sum()
    assert np.all(trust.trust[settled] == 1.0)
    assert np.all(trust.trust[fake] == 0.0)
    magnitude = np.bincount(log.rows, weights=np.abs(log.weights), minlength=log.n_rows)
    kept = (magnitude * trust.trust)[~fake].sum() / magnitude[~fake].sum()
    assert kept > 0.95  # accounts opened at a constant rate over two years: ~4% are under 30 days
