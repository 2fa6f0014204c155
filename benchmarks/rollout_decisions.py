"""Rollout decisions over many seeds: false rollbacks of an equal treatment, early rollbacks of a
harmful one, promotions of a better one, from a handful of users per arm at the first look.

Each experiment is simulated by :mod:`recsys.experiments.simulator`: Poisson arrivals split
between the treatment and its control slice as the rollout plan splits them, one session
per user (``1 + Poisson(9)`` plays, each heard to the end (210 s) or skipped after 2-30 s,
hated with the arm's chance, loved with 2%; each user's completion and hate chances drawn
from a Beta of concentration 10 around the arm's), counters built as the stream worker
builds them, and the real controller (:func:`recsys.experiments.controller.decide`) looking every
``--look-every`` minutes with the guardrails below, from 1% until it rolls back, promotes,
or ``--max-minutes`` pass.

Guardrails: the controller's defaults (5% error rate per experiment split between its
rules, hate margin +0.01 per play, skip margin +0.05 per play, listening may not be worse)
with a step of at least :data:`MIN_STEP` (an hour: a day's traffic pattern is not seen in
less, and a bad step costs at most an hour of a small share) and :data:`MIN_USERS` users
per arm (200) before a step ends, passed explicitly.

Scenarios, each at ``--starts`` (users per arm at the first look at 1%; the arrival rate
is set so, ``arrivals = start / (0.01 * look_every)``):

- **aa**: both arms alike (hate 3% per play): the share of experiments ever rolled back
  (target: at most 5%, the controller's error rate, at every start size);
- **bad**: the treatment's hate rate 3% -> 8% per play: the share rolled back before the
  5% step (target: at least 95%);
- **good**: the treatment's listening +5% per user (plays heard to the end more often),
  the same hate rate: the share promoted (target: at least 90%).

Each share comes with its exact (Clopper-Pearson) 95% interval. Runs spread over at most
two processes.

    python benchmarks/rollout_decisions.py --seeds 200 --output benchmarks/results/rollout-decisions.json
    python benchmarks/rollout_decisions.py --quick
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from report import ROOT, emit
from scipy import stats

from recsys.experiments.controller import Guardrails
from recsys.experiments.simulator import (
    DEFAULT_MAX_MINUTES,
    ArmModel,
    Outcome,
    Rollout,
    RunResult,
    arrivals_for,
    simulate,
)

MIN_STEP = timedelta(minutes=60)
MIN_USERS = 200
GUARDRAILS = Guardrails(min_users=MIN_USERS, min_step=MIN_STEP)
START_SIZES = (1, 2, 5, 10)
MAX_PROCESSES = 2
QUICK_SEEDS = 20
CONFIDENCE = 0.95
KEPT_MISSES = 20
"""Runs that missed their scenario's goal kept in the output per scenario and start size."""
CONTROL = ArmModel(hate_rate=0.03)
MEASURED_CODE = (
    "recsys/experiments/controller.py",
    "recsys/experiments/analysis.py",
    "recsys/experiments/confidence_sequences.py",
    "recsys/experiments/aggregates.py",
)


@dataclass(frozen=True)
class Scenario:
    """A treatment against :data:`CONTROL`, the share of runs that counts, and its target."""

    treatment: ArmModel
    measure: str
    """``rolled_back``, ``rolled_back_early`` or ``promoted``."""
    target: float
    at_most: bool
    """The share must stay at or below ``target`` (else reach it)."""


SCENARIOS = {
    "aa": Scenario(CONTROL, "rolled_back", 0.05, at_most=True),
    "bad": Scenario(replace(CONTROL, hate_rate=0.08), "rolled_back_early", 0.95, at_most=False),
    "good": Scenario(CONTROL.with_listening_gain(0.05), "promoted", 0.90, at_most=False),
}
MEASURES: dict[str, Callable[[RunResult], bool]] = {
    "rolled_back": lambda r: r.rolled_back,
    "rolled_back_early": lambda r: r.rolled_back_early,
    "promoted": lambda r: r.outcome is Outcome.PROMOTED,
}


def guardrails(fixed_sample: bool) -> Guardrails:
    """The measured guardrails, or the baseline that judges every look with fixed-sample intervals."""
    return replace(GUARDRAILS, repeated_looks=False) if fixed_sample else GUARDRAILS


def run_one(task: tuple[str, int, int, int, int, bool]) -> tuple[str, int, RunResult]:
    """One seed of one scenario at one start size."""
    name, start, seed, look_every, max_minutes, fixed_sample = task
    rollout = Rollout(
        SCENARIOS[name].treatment,
        CONTROL,
        arrivals_for(start, look_every=look_every),
        guardrails(fixed_sample),
        look_every=look_every,
        max_minutes=max_minutes,
    )
    return name, start, simulate(rollout, seed=seed)


def share_with_interval(count: int, n: int) -> dict[str, Any]:
    """``count / n`` with its exact binomial interval."""
    interval = stats.binomtest(count, n).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return {
        "count": count,
        "runs": n,
        "share": round(count / n, 4),
        "ci95": [round(interval.low, 4), round(interval.high, 4)],
    }


def rule_of(reason: str) -> str:
    """The rule a rollback reason names."""
    return next((rule for rule in ("listening", "hate rate", "skip rate") if rule in reason), "other")


def summary(scenario: Scenario, runs: list[RunResult]) -> dict[str, Any]:
    """Outcomes of one scenario at one start size, against its target."""
    measured = MEASURES[scenario.measure]
    hit = share_with_interval(sum(measured(r) for r in runs), len(runs))
    low, high = hit["ci95"]
    good_side = high <= scenario.target if scenario.at_most else low >= scenario.target
    bad_side = low > scenario.target if scenario.at_most else high < scenario.target
    misses = [r for r in runs if measured(r) == scenario.at_most]
    rolled_back = [r for r in runs if r.rolled_back]
    return {
        "measure": scenario.measure,
        "target": f"{'<=' if scenario.at_most else '>='} {scenario.target:.0%}",
        **hit,
        "met": hit["share"] <= scenario.target if scenario.at_most else hit["share"] >= scenario.target,
        "interval_verdict": "met" if good_side else "missed" if bad_side else "undecided",
        "outcomes": dict(Counter(str(r.outcome) for r in runs)),
        "rolled_back_before_5pct": sum(r.rolled_back_early for r in runs),
        "rollback_shares": dict(Counter(f"{r.share:.0%}" for r in rolled_back)),
        "rollback_rules": dict(Counter(rule_of(reason) for r in rolled_back for reason in r.reasons)),
        "median_end_minute": statistics.median(r.minute for r in runs),
        "mean_first_look_users": [
            round(statistics.fmean(r.first_look_users[i] for r in runs), 2) for i in (0, 1)
        ],
        "misses": [_brief(r) for r in sorted(misses, key=lambda r: r.seed)[:KEPT_MISSES]],
    }


def _brief(run: RunResult) -> dict[str, Any]:
    return {
        "seed": run.seed,
        "outcome": str(run.outcome),
        "minute": run.minute,
        "share": run.share,
        "reasons": list(run.reasons),
    }


def code_digests() -> dict[str, str]:
    """A digest of each file whose statistics are measured, naming the exact code of the run."""
    return {path: hashlib.sha256((ROOT / path).read_bytes()).hexdigest()[:16] for path in MEASURED_CODE}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200, help="experiments per scenario and start size")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SEEDS} seeds (a smoke run)")
    parser.add_argument("--starts", type=int, nargs="+", default=list(START_SIZES))
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--look-every", type=int, default=1, help="minutes between the controller's looks")
    parser.add_argument("--max-minutes", type=int, default=DEFAULT_MAX_MINUTES)
    parser.add_argument("--processes", type=int, default=MAX_PROCESSES, choices=range(1, MAX_PROCESSES + 1))
    parser.add_argument(
        "--fixed-sample",
        action="store_true",
        help="the baseline: judge every look with fixed-sample intervals (what repeated looks do to them)",
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    seeds = QUICK_SEEDS if args.quick else args.seeds
    measured = guardrails(args.fixed_sample)
    tasks = [
        (name, start, seed, args.look_every, args.max_minutes, args.fixed_sample)
        for name in args.scenarios
        for start in args.starts
        for seed in range(seeds)
    ]
    began = time.perf_counter()
    with multiprocessing.Pool(args.processes) as pool:
        done = pool.map(run_one, tasks, chunksize=max(1, len(tasks) // (8 * args.processes)))
    elapsed = time.perf_counter() - began
    results: dict[str, dict[str, Any]] = {name: {} for name in args.scenarios}
    for name in args.scenarios:
        for start in args.starts:
            runs = [r for n, s, r in done if n == name and s == start]
            results[name][str(start)] = summary(SCENARIOS[name], runs)
    result = {
        "seeds": seeds,
        "starts": args.starts,
        "look_every_minutes": args.look_every,
        "max_minutes": args.max_minutes,
        "guardrails": {
            "min_users": measured.min_users,
            "min_step_minutes": measured.min_step.total_seconds() / 60,
            "alpha": measured.alpha,
            "max_listening_decrease": measured.max_listening_decrease,
            "max_hate_rate_increase": measured.max_hate_rate_increase,
            "max_skip_rate_increase": measured.max_skip_rate_increase,
            "listening_effect": measured.listening_effect,
            "rate_effect": measured.rate_effect,
            "repeated_looks": measured.repeated_looks,
        },
        "control": vars(CONTROL),
        "treatments": {name: vars(SCENARIOS[name].treatment) for name in args.scenarios},
        "measured_code": code_digests(),
        "processes": args.processes,
        "elapsed_s": round(elapsed, 1),
        "results": results,
    }
    return emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
