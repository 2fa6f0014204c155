"""Sensitivity of interleaving against an A/B test: users needed to tell a ~5% better model.

In one process, without HTTP or Kafka (the statistics are what is measured): a synthetic
catalogue, two real models trained on it, simulated listeners with hidden tastes
(:mod:`recsys.data.listeners`) as in ``aa_test.py``. The treatment is the ALS + item-kNN blend
with a fifth of kNN (:data:`TREATMENT`), the control plain ALS (:data:`CONTROL`); the run
first measures the gap in listening time per listener on the same listeners
(``--calibration-users``), about +5%.

For each seed and activity level, one stream of listeners arrives. Each gets one list of
``--k`` tracks (``--sessions-mean 1``), or a geometric number of lists with that mean: real
listeners differ in how much they listen, which the simulator does not model by itself.

- **interleaving**: every listener gets the team-draft merge of both models' lists
  (:func:`recsys.experiments.interleaving.team_draft`); each track's listening is credited to the model
  that contributed it, with the stream worker's arithmetic
  (:func:`recsys.experiments.aggregates.credit_changes`),
  and the mean preference over listeners is judged with
  :func:`recsys.experiments.confidence_sequences.mean_sequence`;
- **A/B at 1%**: listeners are split evenly between the treatment and its control slice
  (1% each); listening time per listener is compared with
  :func:`recsys.experiments.confidence_sequences.difference_sequence`.

Both use the same always-valid rule (Lindon et al.'s t confidence sequence, ``--alpha``,
the same prior precision ``phi`` from ``--effect``) and look every ``--look-every`` users.
A design decides when its interval leaves zero; the number of users in the experiment at
that look is its users-to-decision (``None``: not decided within ``--max-users``). Reported
per activity level: the median over seeds of each, their ratio (A/B users over interleaving
users), and the ratio of the time to a decision when both run at a 1% share (the A/B test
also takes a control slice of 1%, so it gathers its users twice as fast). An A/A run of
interleaving (control merged with itself) counts how often it decides anything (nominal:
at most ``--alpha`` of the seeds).

    python benchmarks/interleaving_sensitivity.py --seeds 20 --sessions-mean 1 3 \\
        --output benchmarks/results/interleaving-sensitivity.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from report import emit

from recsys.data.formats import DataFormat, write_synth
from recsys.data.listeners import Listener, TasteModel
from recsys.data.synth import SynthSpec, generate
from recsys.events.schemas import FeedbackEvent
from recsys.experiments.aggregates import add_to_arm, add_to_user, credit_changes
from recsys.experiments.analysis import STANDARDISED_EFFECT, ArmMetrics
from recsys.experiments.assignment import bucket
from recsys.experiments.confidence_sequences import Interval, difference_sequence, mean_sequence, phi_for
from recsys.experiments.interleaving import FIRST, SECOND, Preference, preference, team_draft
from recsys.models.als import ALSParams
from recsys.models.device import Device
from recsys.registry.plan import Experiment, ExperimentMode
from recsys.registry.store import FileRegistry
from recsys.scoring.recommender import Query, VersionRecommender
from training.pipeline import TrainRequest, train

TREATMENT = ALSParams(knn_weight=0.2)
"""ALS blended with a fifth of item-kNN: about 5% more listening than plain ALS in this simulator."""
CONTROL = ALSParams(knn_weight=0.0)
"""Plain ALS (64 factors), the same training otherwise."""
SEED_TRACKS = 5
AB_SHARE = 0.01
"""The A/B test's treatment share; its control slice is as large (2% of traffic in all)."""
INTERLEAVING_SHARE = 0.01
CHUNK = 250
"""Listeners whose lists are scored in one batch."""
DATA_SEED = 5
CALIBRATION_SEED = 10_000
EXPERIMENT = Experiment(name="il", treatment="2.2", share=INTERLEAVING_SHARE, mode=ExperimentMode.INTERLEAVE)


@dataclass
class Stream:
    """One seed's listeners, their sessions' seed tracks, and both models' lists, scored lazily."""

    listeners: list[Listener]
    sessions: list[list[list[str]]]
    models: dict[str, VersionRecommender]
    k: int
    lists: dict[str, list[list[list[str]]]] = field(default_factory=dict)

    def ranked(self, name: str, user: int) -> list[list[str]]:
        """``name``'s list for each session of listener ``user``."""
        done = self.lists.setdefault(name, [])
        while len(done) <= user:
            chunk = self.sessions[len(done) : len(done) + CHUNK]
            queries = [Query(tracks=seeds, k=self.k) for sessions in chunk for seeds in sessions]
            tracks = iter(r.tracks for r in self.models[name].recommend(queries))
            done.extend([next(tracks) for _ in sessions] for sessions in chunk)
        return done[user]


def make_stream(
    model: TasteModel,
    models: dict[str, VersionRecommender],
    *,
    seed: int,
    users: int,
    k: int,
    sessions_mean: float,
) -> Stream:
    rng = np.random.default_rng(seed)
    listeners = model.listeners(users, seed=seed, prefix="sens")
    counts = rng.geometric(1.0 / sessions_mean, users) if sessions_mean > 1 else np.ones(users, int)
    sessions = [
        [model.seed_tracks(who, SEED_TRACKS, rng) for _ in range(int(n))]
        for who, n in zip(listeners, counts, strict=True)
    ]
    return Stream(listeners, sessions, models, k)


def users_to_decision(
    add_user: Callable[[int], None], judge: Callable[[], Interval | None], *, users: int, every: int
) -> dict[str, Any]:
    """Feed listeners one by one, judge every ``every`` users; the first look whose interval
    leaves zero decides."""
    for user in range(users):
        add_user(user)
        if (user + 1) % every == 0:
            found = judge()
            if found is not None and (found.low > 0 or found.high < 0):
                return {"users": user + 1, "better": found.low > 0, "estimate": found.estimate}
    return {"users": None, "better": None, "estimate": None}


def interleaving_run(
    stream: Stream, model: TasteModel, *, treatment: str, control: str, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Every listener gets the merged lists; listening is credited as the stream worker does."""
    rng = np.random.default_rng(seed)
    variant = f"{EXPERIMENT.name}:interleave"
    counters: dict[str, dict[str, float]] = {}
    versions = {FIRST: EXPERIMENT.treatment, SECOND: "2.1"}

    def add_user(user: int) -> None:
        listener, credited = stream.listeners[user], dict[str, int]()
        for session, (first, second) in enumerate(
            zip(stream.ranked(treatment, user), stream.ranked(control, user), strict=True)
        ):
            merged = team_draft(first, second, seed=f"{listener.user_id}:{session}", k=args.k)
            for track, team in zip(merged.tracks, merged.teams, strict=True):
                version = versions[team]
                heard = model.listen(listener, track, rng).listen_ms
                for name, change in credit_changes(credited, version, heard).items():
                    arm = counters.setdefault(f"{name}|{variant}", {})
                    for counter, value in change.items():
                        arm[counter] = arm.get(counter, 0.0) + value
                credited[version] = credited.get(version, 0) + heard

    def judge() -> Interval:
        found: Preference = preference(counters, EXPERIMENT)
        return mean_sequence(
            n=found.users,
            total=found.total,
            total_sq=found.total_sq,
            alpha=args.alpha,
            phi=phi_for(args.effect),
        )

    return users_to_decision(add_user, judge, users=args.max_users, every=args.look_every)


def ab_run(stream: Stream, model: TasteModel, *, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Listeners split evenly between treatment and control, listening per listener compared."""
    rng = np.random.default_rng(seed)
    arms: dict[str, dict[str, float]] = {"treatment": {}, "control": {}}

    def add_user(user: int) -> None:
        listener = stream.listeners[user]
        arm = "treatment" if bucket(listener.user_id, f"ab-{seed}") < 0.5 else "control"
        totals: dict[str, int] = {}
        for tracks in stream.ranked(arm, user):
            for track in tracks:
                kind, ms = model.listen(listener, track, rng).events[0]  # the play, complete or skip
                event = FeedbackEvent(user_id=listener.user_id, track_id=track, type=kind, listen_ms=ms)
                arms[arm] = add_to_arm(arms[arm], event, new_user=not totals, user_before=totals)
                totals = add_to_user(totals, event)

    def judge() -> Interval | None:
        t, c = (ArmMetrics.from_counters(arms[a]).listening for a in ("treatment", "control"))
        if min(t.n, c.n) < 2:
            return None
        return difference_sequence(t, c, alpha=args.alpha, phi=phi_for(args.effect))

    return users_to_decision(add_user, judge, users=args.max_users, every=args.look_every)


def calibrate(
    model: TasteModel, models: dict[str, VersionRecommender], args: argparse.Namespace
) -> dict[str, Any]:
    """Listening per listener of each model, on the same listeners (one list each)."""
    stream = make_stream(
        model, models, seed=CALIBRATION_SEED, users=args.calibration_users, k=args.k, sessions_mean=1.0
    )
    means: dict[str, float] = {}
    for name in ("treatment", "control"):
        rng = np.random.default_rng(CALIBRATION_SEED)
        heard = [
            sum(model.listen(listener, t, rng).listen_ms for tracks in stream.ranked(name, u) for t in tracks)
            for u, listener in enumerate(stream.listeners)
        ]
        means[name] = float(np.mean(heard)) / 1000
    return {"listen_s_per_listener": means, "gap": means["treatment"] / means["control"] - 1}


def median_users(runs: Sequence[dict[str, Any]], cap: int) -> float | None:
    """Median of users-to-decision over seeds, undecided runs counting as more than ``cap``
    (``None`` when more than half are undecided)."""
    values = sorted(r["users"] if r["users"] is not None else float("inf") for r in runs)
    found = statistics.median(values)
    return None if found > cap else float(found)


def train_models(folder: Path, data_path: Path) -> dict[str, VersionRecommender]:
    registry = FileRegistry(folder / "models")
    models = {}
    for name, params in (("control", CONTROL), ("treatment", TREATMENT)):
        version = train(
            TrainRequest(data=data_path, params=params, device=Device.CPU, evaluate=False), registry
        )
        models[name] = VersionRecommender(registry.load(version.manifest.version))
    return models


def one_setting(
    model: TasteModel, models: dict[str, VersionRecommender], sessions_mean: float, args: argparse.Namespace
) -> dict[str, Any]:
    """Both designs (and the A/A) on the same listeners for every seed, at one activity level."""
    runs: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        stream = make_stream(
            model, models, seed=seed, users=args.max_users, k=args.k, sessions_mean=sessions_mean
        )
        runs.append(
            {
                "seed": seed,
                "interleaving": interleaving_run(
                    stream, model, treatment="treatment", control="control", seed=seed, args=args
                ),
                "ab": ab_run(stream, model, seed=seed, args=args),
                "interleaving_aa": interleaving_run(
                    stream, model, treatment="control", control="control", seed=seed, args=args
                ),
            }
        )
        print(f"sessions {sessions_mean:g}, seed {seed}: {runs[-1]}", file=sys.stderr, flush=True)
    medians = {
        design: median_users([r[design] for r in runs], args.max_users) for design in ("interleaving", "ab")
    }
    ratio = medians["ab"] / medians["interleaving"] if medians["ab"] and medians["interleaving"] else None
    return {
        "sessions_mean": sessions_mean,
        "median_users_to_decision": medians,
        "ab_over_interleaving": ratio,
        "time_ratio_both_at_1pct": ratio * INTERLEAVING_SHARE / (2 * AB_SHARE) if ratio else None,
        "decided": {
            d: sum(r[d]["users"] is not None for r in runs) for d in ("interleaving", "ab", "interleaving_aa")
        },
        "wrong_direction": {d: sum(r[d]["better"] is False for r in runs) for d in ("interleaving", "ab")},
        "runs": runs,
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--max-users", type=int, default=6000, help="users per design and seed before giving up"
    )
    parser.add_argument("--look-every", type=int, default=10, help="users between two looks")
    parser.add_argument("--k", type=int, default=10, help="tracks per list")
    parser.add_argument(
        "--sessions-mean",
        type=float,
        nargs="+",
        default=[1.0, 3.0],
        help="lists per listener: 1 gives each one list; above 1, geometric (one run per value)",
    )
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument(
        "--effect", type=float, default=STANDARDISED_EFFECT, help="standardised effect phi is tuned to"
    )
    parser.add_argument("--scale", type=float, default=0.003)
    parser.add_argument("--calibration-users", type=int, default=4000)
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args()


def main() -> int:
    args = arguments()
    started = time.perf_counter()
    data = generate(SynthSpec.at_scale(args.scale, seed=DATA_SEED))
    model = TasteModel(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.parquet"
        write_synth(data, path, fmt=DataFormat.PARQUET)
        models = train_models(Path(tmp), path)
        calibration = calibrate(model, models, args)
        settings = [one_setting(model, models, sessions, args) for sessions in args.sessions_mean]
    result = {
        "simulator": (
            "recsys.data.listeners listeners; real trained models: ALS + 20% item-kNN against plain ALS"
        ),
        "scale": args.scale,
        "seeds": args.seeds,
        "k": args.k,
        "alpha": args.alpha,
        "phi": phi_for(args.effect),
        "look_every": args.look_every,
        "max_users": args.max_users,
        "calibration": calibration,
        "summary": [{k: v for k, v in s.items() if k != "runs"} for s in settings],
        "seconds": round(time.perf_counter() - started, 1),
        "settings": settings,
    }
    return emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
