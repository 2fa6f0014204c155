"""Fake accounts (shilling) against training: a cold track's exposure with and without each defense.

For each data set, a seeded 30% of the playlists become honest listener accounts in a
feedback event log (one ``complete`` per track; accounts opened at a constant rate over
the two years before the cut, their events spread since), the rest stay playlists. The
test playlists of the continuation protocol (drawn among those, as the trainer does) are
the real users whose recommendations are watched.

An attack adds fake accounts to the log: each loves and completes one target (a seeded
random track among the 5% least popular) and completes popular filler tracks, all within
the day before the cut (``recsys.trust.simulation.Attack`` for the other shapes). For
every scenario and defense the default model is trained exactly as the trainer does
with a feedback log (event log loaded from Parquet, merged after the playlists, row weights
from the defense) and the target's top-20 slots over the test playlists are counted:

- exposure lift = max(slots with the attack, 1) / max(slots without it, 1), the same
  defense in both runs (a target in no list counts one slot);
- cut = lift without defense / lift with it (the goal: 10x or more);
- fallback rank: the target's place in the most-popular list served to listeners nothing is
  known about, with rows counted by the same weights (as the trainer writes it).

Without attack, each defense's offline metrics (NDCG@500 etc.) are compared with no
defense on the same split (the goal: less than 1% lower NDCG@500).

Defenses: ``cap`` (each account's total weight capped at the median account's),
``groups`` (accounts whose positive track sets are near-identical by MinHash LSH, Jaccard
about 0.5 and up, share one account's weight), ``age`` (``recsys.trust``: the product's).
The first two are measured here only; ``off`` is no defense.

    python benchmarks/shilling.py --data ../shared/data/yes_small \\
        ../shared/data/aotm2011_mcfee_segments/aotm2011_mcfee_segments_fold0.tsv \\
        --output benchmarks/results/shilling.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from report import emit  # benchmarks/report.py, next to this script

from recsys.data.formats import load
from recsys.data.interaction_table import Interactions
from recsys.data.merge import with_feedback
from recsys.evaluation.exposure import EXPOSURE_K, exposure_lift, exposure_slots
from recsys.evaluation.protocol import prepare, score
from recsys.models.als import ALSModel, ALSParams
from recsys.models.device import Device
from recsys.trust.accounts import assess
from recsys.trust.policy import TrustParams
from recsys.trust.simulation import Attack, attack_events, cold_track, listener_events, take_rows

LISTENER_SHARE = 0.3
MINHASH_HASHES, MINHASH_BANDS = 64, 16
"""16 bands of 4 hashes: accounts whose sets have Jaccard similarity 0.5 share a band with
probability 0.65, at 0.8 with 0.999."""
MAIN = "300 accounts, top 10 fillers"
RANDOM = "300 accounts, 30 fillers drawn from the top 100"
SCENARIOS = {
    MAIN: Attack(),
    RANDOM: Attack(fillers=30, filler_pool=100),
    "100 accounts, top 10 fillers": Attack(accounts=100),
    "1000 accounts, top 10 fillers": Attack(accounts=1000),
    "300 accounts, top 3 fillers": Attack(fillers=3),
    "300 accounts, top 10 fillers, 5 padding plays, over 3 days": Attack(padding=5, window_days=3),
    "300 accounts, client times backdated 90 days": Attack(backdate_days=90),
    "300 accounts opened 14 days before the attack (5 padding plays)": Attack(padding=5, sleeper_days=14),
    "300 accounts opened 45 days before the attack (5 padding plays)": Attack(padding=5, sleeper_days=45),
}
COMPARED = (MAIN, RANDOM)
"""Scenarios every defense is measured on; the others compare ``off`` with ``age``."""
CHOSEN = "age"
GOAL_CUT, GOAL_NDCG_DROP = 10.0, 0.01

Defense = Callable[[Interactions], np.ndarray | None]
"""Weight of each listener of a loaded event log (``None``: all count fully)."""


def capped(events: Interactions) -> np.ndarray:
    """Each account's total weight capped at the median account's."""
    totals = np.bincount(events.rows, weights=np.abs(events.weights), minlength=events.n_rows)
    cap = float(np.median(totals[totals > 0]))
    out: np.ndarray = np.minimum(1.0, cap / np.maximum(totals, 1e-9)).astype(np.float32)
    return out


def grouped(events: Interactions) -> np.ndarray:
    """1 / the number of accounts whose positive track sets are near-identical to each account's.

    MinHash LSH: accounts that share all the hashes of one band fall in one bucket; an
    account's group is its largest bucket over the bands (buckets are not chained).
    """
    positive = events.weights > 0
    order = np.argsort(events.rows[positive], kind="stable")
    rows = events.rows[positive][order]
    items = events.items[positive][order].astype(np.int64)
    prime = (1 << 31) - 1
    rng = np.random.default_rng(0)
    a = rng.integers(1, prime, MINHASH_HASHES)
    b = rng.integers(0, prime, MINHASH_HASHES)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    signatures = np.minimum.reduceat((items[:, None] * a + b) % prime, starts, axis=0)
    width = MINHASH_HASHES // MINHASH_BANDS
    group = np.ones(len(starts), np.int64)
    for band in range(MINHASH_BANDS):
        _, bucket, sizes = np.unique(
            signatures[:, band * width : (band + 1) * width], axis=0, return_inverse=True, return_counts=True
        )
        group = np.maximum(group, sizes[bucket.ravel()])
    out = np.ones(events.n_rows, np.float32)
    out[rows[starts]] = 1.0 / group
    return out


def aged(events: Interactions) -> np.ndarray | None:
    trust = assess(events, TrustParams())
    return trust.trust if trust.discounts else None


DEFENSES: dict[str, Defense] = {"off": lambda _events: None, "cap": capped, "groups": grouped, "age": aged}


class Bench:
    """One data set split into playlists and honest listeners, with its target and test split."""

    def __init__(self, path: Path, folder: Path, seed: int) -> None:
        data = load(path)
        rng = np.random.default_rng(seed)
        listeners = np.flatnonzero(rng.random(data.n_rows) < LISTENER_SHARE)
        self.name = path.name if path.is_dir() else path.stem
        self.base = take_rows(data, np.setdiff1d(np.arange(data.n_rows), listeners))
        self.honest = listener_events(data, listeners, seed=seed)
        self.popularity = np.bincount(data.items[data.weights > 0], minlength=data.n_items)
        self.target = cold_track(self.popularity, seed=seed)
        self.folder, self.seed = folder, seed
        self.playlists, self.listeners = self.base.n_rows, len(listeners)

    def events(self, attack: Attack | None) -> Interactions:
        """The feedback log (honest, plus the attack), written and loaded as the trainer does."""
        table = self.honest
        if attack is not None:
            fake = attack_events(
                attack, target=self.target, popularity=self.popularity, item_ids=self.base.item_ids
            )
            table = pa.concat_tables([table, fake])
        path = self.folder / "feedback.parquet"
        pq.write_table(table, path)
        return load(path)

    def run(self, attack: Attack | None, defense: str) -> dict[str, Any]:
        """Train with ``defense``; the target's slots (and the offline metrics when there is no attack)."""
        start = time.perf_counter()
        events = self.events(attack)
        trust = DEFENSES[defense](events)
        merged, _ = with_feedback(self.base, events)
        prepared = prepare(merged, seed=self.seed, test_rows_below=self.base.n_rows)
        model = ALSModel(ALSParams(), device=Device.CPU)
        weights = None if trust is None else np.concatenate([np.ones(self.base.n_rows, np.float32), trust])
        model.fit(prepared.train, row_weights=weights)
        recommended = model.recommend(prepared.split.test_rows, prepared.train, EXPOSURE_K)
        slots = exposure_slots(recommended, self.target)
        out: dict[str, Any] = {
            "defense": defense,
            "slots": slots,
            "share": slots / recommended.size,
        }
        out |= self.weight_kept(events, trust)
        if attack is None:
            out["metrics"] = {k: round(v, 5) for k, v in score(model, prepared).items()}
            out["test_playlists"] = len(prepared.split.test_rows)
        else:
            out["fallback_rank"] = fallback_rank(merged, self.target, weights)
        out["seconds"] = round(time.perf_counter() - start, 1)
        return out

    @staticmethod
    def weight_kept(events: Interactions, trust: np.ndarray | None) -> dict[str, float]:
        """Share of the honest and of the fake accounts' feedback weight the defense kept."""
        fake = pc.starts_with(events.row_ids.ids, "fake").to_numpy(zero_copy_only=False)
        magnitude = np.bincount(events.rows, weights=np.abs(events.weights), minlength=events.n_rows)
        kept = magnitude if trust is None else magnitude * trust
        out = {"honest_weight_kept": round(float(kept[~fake].sum() / magnitude[~fake].sum()), 4)}
        if fake.any():
            out["fake_weight_kept"] = round(float(kept[fake].sum() / magnitude[fake].sum()), 4)
        return out


def fallback_rank(merged: Interactions, target: int, weights: np.ndarray | None) -> int:
    """The target's rank in the serving's most-popular fallback (rows holding each track, by weight)."""
    counts = np.bincount(
        merged.items, weights=None if weights is None else weights[merged.rows], minlength=merged.n_items
    )
    return int((counts > counts[target]).sum()) + 1


def measure(bench: Bench, defenses: list[str]) -> dict[str, Any]:
    clean = {d: bench.run(None, d) for d in defenses}
    off_ndcg = clean["off"]["metrics"]["ndcg@500"]
    for row in clean.values():
        row["ndcg_change"] = round(row["metrics"]["ndcg@500"] / off_ndcg - 1, 5)
        print(f"{bench.name} clean {row['defense']}: {row}", file=sys.stderr, flush=True)
    attacks = []
    for name, attack in SCENARIOS.items():
        arms = defenses if name in COMPARED else [d for d in ("off", CHOSEN) if d in defenses]
        runs = {d: bench.run(attack, d) for d in arms}
        for d, row in runs.items():
            row["lift"] = exposure_lift(row["slots"], clean[d]["slots"])
            row["cut"] = round(runs["off"]["lift"] / row["lift"], 2) if "off" in runs else None
            print(f"{bench.name} {name} {d}: {row}", file=sys.stderr, flush=True)
        attacks.append({"scenario": name, "attack": asdict(attack), "runs": list(runs.values())})
    return {
        "data": bench.name,
        "playlists": bench.playlists,
        "honest_listeners": bench.listeners,
        "test_playlists": clean["off"]["test_playlists"],
        "target": {
            "track": bench.base.item_ids.external(bench.target),
            "popularity": int(bench.popularity[bench.target]),
        },
        "clean": list(clean.values()),
        "attacks": attacks,
    }


def verdict(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each defense against the goals: cut 10x or more (fresh accounts), NDCG@500 less than 1% lower."""
    out: dict[str, Any] = {}
    for data in results:
        for clean in data["clean"]:
            defense = clean["defense"]
            if defense == "off":
                continue
            cuts = {
                a["scenario"]: (a["attack"]["sleeper_days"] > 0, r["cut"])
                for a in data["attacks"]
                for r in a["runs"]
                if r["defense"] == defense
            }
            fresh = [c for aged, c in cuts.values() if not aged]
            out.setdefault(defense, {})[data["data"]] = {
                "ndcg@500_change": clean["ndcg_change"],
                "honest_weight_kept": clean["honest_weight_kept"],
                "min_cut_fresh_accounts": min(fresh),
                "cut_aged_accounts": {s: c for s, (aged, c) in cuts.items() if aged},
                "meets_goals": min(fresh) >= GOAL_CUT and clean["ndcg_change"] > -GOAL_NDCG_DROP,
            }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--seed", type=int, default=0, help="split, listeners and target")
    parser.add_argument("--defenses", nargs="+", default=list(DEFENSES), choices=list(DEFENSES))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if "off" not in args.defenses:
        parser.error("--defenses must include off (the baseline of every comparison)")
    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.data:
            results.append(measure(Bench(path, Path(tmp), args.seed), args.defenses))
    result = {
        "protocol": {
            "listener_share": LISTENER_SHARE,
            "exposure_k": EXPOSURE_K,
            "lift": "max(slots with attack, 1) / max(slots without, 1), same defense",
            "cut": "lift without defense / lift with it",
            "als": ALSParams().model_dump(mode="json"),
            "trust": TrustParams().model_dump(mode="json"),
        },
        "results": results,
        "verdict": verdict(results),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    return emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
