"""A/A calibration: two arms served by the same model, 20 seeds; how often is a difference "found"?

In one process, without HTTP or Kafka (the statistics are what is checked here): a model
is trained on a synthetic set; for each seed, ``--listeners`` simulated listeners with
hidden tastes (:mod:`recsys.data.listeners`) are assigned by the real rollout assignment to an
experiment at 50% (treatment and its control slice), both arms answered by the same model;
each listener listens to one list of 10 recommendations; the arms' counters are built with
the stream worker's functions (:mod:`recsys.experiments.aggregates`) and compared with
:func:`recsys.experiments.analysis.welch` and the sample-ratio-mismatch check. Reports how many seeds
show a significant difference in listening time per user (nominal: 5%), and how many
fail the SRM check (nominal: 0.1%). It also looks ``--looks`` times as listeners
accumulate, as the rollout controller does, and counts the seeds that any look would roll
back (treatment worse with confidence) with Welch's fixed-sample interval and with the
always-valid one the controller uses.

    python benchmarks/aa_test.py --seeds 20 --listeners 2000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from report import emit

from recsys.data.formats import DataFormat, write_synth
from recsys.data.listeners import TasteModel
from recsys.data.synth import SynthSpec, generate
from recsys.events.schemas import FeedbackEvent
from recsys.experiments.aggregates import add_to_arm, add_to_user
from recsys.experiments.analysis import SRM_ALPHA, ArmMetrics, always_valid, sample_ratio_mismatch, welch
from recsys.experiments.assignment import assign
from recsys.models.device import Device
from recsys.registry.plan import Experiment, RolloutPlan
from recsys.registry.store import FileRegistry
from recsys.scoring.recommender import Query, VersionRecommender
from training.pipeline import TrainRequest, train

K = 10


def one_seed(
    seed: int, listeners: int, model: TasteModel, recommender: VersionRecommender, looks: int
) -> dict[str, Any]:
    plan = RolloutPlan(experiments=[Experiment(name=f"aa{seed}", treatment="2.1", share=0.5)])
    rng = np.random.default_rng(seed)
    counters: dict[str, dict[str, float]] = {"treatment": {}, "control": {}}
    every = max(listeners // looks, 1)
    worse_at = {"welch": None, "always_valid": None}  # the first look that would roll back
    for i, listener in enumerate(model.listeners(listeners, seed=seed, prefix="aa")):
        arm = assign(user_id=listener.user_id, plan=plan).variant.split(":")[-1]
        query = Query(tracks=model.seed_tracks(listener, 5, rng), k=K)
        user: dict[str, int] = {}
        for track in recommender.recommend([query])[0].tracks:
            for kind, ms in model.listen(listener, track, rng).events:
                event = FeedbackEvent(user_id=listener.user_id, track_id=track, type=kind, listen_ms=ms)
                counters[arm] = add_to_arm(counters[arm], event, new_user=not user, user_before=user)
                user = add_to_user(user, event)
        if (i + 1) % every == 0:
            t, c = (
                ArmMetrics.from_counters(counters["treatment"]),
                ArmMetrics.from_counters(counters["control"]),
            )
            for name, interval in (("welch", welch), ("always_valid", always_valid)):
                if worse_at[name] is None and min(t.users, c.users) >= 2 and interval(t, c).high < 0:
                    worse_at[name] = (i + 1) // every
    a, b = ArmMetrics.from_counters(counters["treatment"]), ArmMetrics.from_counters(counters["control"])
    diff = welch(a, b)
    srm = sample_ratio_mismatch({"t": a.users, "c": b.users}, {"t": 0.5, "c": 0.5})
    return {
        "seed": seed,
        "users": [a.users, b.users],
        "difference_s": round(diff.estimate, 1),
        "ci": [round(diff.low, 1), round(diff.high, 1)],
        "significant": diff.significant,
        "srm_p_value": round(srm, 4),
        "rolled_back_at_look": worse_at,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--listeners", type=int, default=2000)
    parser.add_argument("--scale", type=float, default=0.003)
    parser.add_argument(
        "--looks", type=int, default=10, help="looks as listeners accumulate (the controller's)"
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    spec = SynthSpec.at_scale(args.scale, seed=5)
    data = generate(spec)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.parquet"
        write_synth(data, path, fmt=DataFormat.PARQUET)
        registry = FileRegistry(Path(tmp) / "models")
        train(TrainRequest(data=path, device=Device.CPU, evaluate=False), registry)
        recommender = VersionRecommender(registry.load("latest"))
        model = TasteModel(data)
        runs = [one_seed(seed, args.listeners, model, recommender, args.looks) for seed in range(args.seeds)]
    result = {
        "seeds": args.seeds,
        "listeners_per_seed": args.listeners,
        "significant_share": sum(r["significant"] for r in runs) / len(runs),
        "srm_failures": sum(r["srm_p_value"] < SRM_ALPHA for r in runs),
        "looks": args.looks,
        "rolled_back_share": {
            name: sum(r["rolled_back_at_look"][name] is not None for r in runs) / len(runs)
            for name in ("welch", "always_valid")
        },
        "runs": runs,
    }
    return emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
