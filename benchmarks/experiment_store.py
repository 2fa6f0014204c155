"""The registry's experiment records at scale: what a replica's poll costs, and reading a history.

Records ``--decisions`` rollout controller decisions, spread over ``--experiments``
experiments, into a fresh registry through the records file's real append path
(lock, one ``write`` per record, one ``fsync`` per batch of ``--batch``), then measures:

- a serving replica's registry check, as its watcher thread makes it every
  ``reload_interval_s``: ``resolve("production")`` then ``rollout()`` (median and p99);
- the size of ``state.json``, which every replica reads at each check;
- reading one experiment's history (``records(experiments=[name])`` then ``history``),
  the dashboard's reads (experiment names, the latest records) and a full read;
- single decisions recorded as the controller does (``record_decision``: lock, append, fsync).

The same run measures the former layout as the baseline: a ``state.json`` holding the audit
log of ``--baseline-decisions`` decisions (flat ``detail`` dicts, as it was written), its size,
the same replica check against it, and its migration into records on the first write.

    python benchmarks/experiment_store.py --output benchmarks/results/experiment-store.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from report import emit  # benchmarks/report.py

from recsys.experiments.analysis import ArmMetrics
from recsys.experiments.arms import decision_record
from recsys.experiments.controller import decide
from recsys.experiments.report.history import history
from recsys.experiments.serving_health import ServingHealth
from recsys.registry.experiment_log import DecisionRecord, ExperimentLog
from recsys.registry.plan import Experiment, RolloutPlan
from recsys.registry.store import FileRegistry

START = datetime(2026, 1, 1, tzinfo=UTC)
SLICES = ("platform=ios", "platform=android", "platform=web", "country=DE", "country=US", "country=BR")
RUNNING = 3
"""Experiments in the plan that replicas serve (the rest have ended)."""


def arm(users: int, listen: float, hates: float) -> ArmMetrics:
    return ArmMetrics(
        users=users,
        listen_s_per_user=listen,
        listen_s_variance=300.0**2,
        plays_per_user=4.0,
        love_rate=0.05,
        hate_rate=hates,
        skip_rate=0.2,
        hate_rate_variance=hates * (1 - hates) / 4.0,
        skip_rate_variance=0.2 * 0.8 / 4.0,
    )


def template(name: str, index: int) -> DecisionRecord:
    """A realistic decision of experiment ``name``: the controller's own, with every number."""
    experiment = Experiment(name=name, treatment="2.2", share=0.05)
    arms = {
        "treatment": arm(2000 + index, 640.0 + index % 7, 0.010),
        "control": arm(2010 + index, 600.0, 0.011),
        "holdout": arm(400, 300.0, 0.02),
    }
    serving = {"treatment": ServingHealth(9000, 3, 48.5), "control": ServingHealth(9100, 1, 40.2)}
    decision = decide(
        experiment=experiment,
        treatment=arms["treatment"],
        control=arms["control"],
        step_age=timedelta(hours=2),
        serving=serving["treatment"],
    )
    slices = {
        s: {"treatment_users": 300.0, "control_users": 310.0, "estimate": 12.5, "low": -30.2, "high": 55.1,
            "p_value": 0.41}
        for s in SLICES
    }  # fmt: skip
    return decision_record(
        experiment=experiment,
        decision=decision,
        arms=arms,
        control_version="2.1",
        serving=serving,
        slices=slices,
    )


def decisions(count: int, experiments: int) -> list[DecisionRecord]:
    """``count`` decisions, round-robin over ``experiments`` names, a minute apart."""
    names = [f"exp-{i:04d}" for i in range(experiments)]
    templates = [template(name, i) for i, name in enumerate(names)]
    return [
        templates[i % experiments].model_copy(update={"at": START + timedelta(minutes=i)})
        for i in range(count)
    ]


def fresh_registry(root: Path) -> FileRegistry:
    """Production 2.1 and a plan with ``RUNNING`` experiments, as the registry writes them."""
    for version in ("2.1", "2.2"):
        (root / "versions" / version).mkdir(parents=True)
    plan = RolloutPlan()
    for i in range(RUNNING):
        plan = plan.upsert(Experiment(name=f"exp-{i:04d}", treatment="2.2", share=0.05))
    state = {
        "stages": {"2.1": "production", "2.2": "candidate"},
        "production_history": ["2.1"],
        "rollout": plan.model_dump(mode="json"),
    }
    (root / "state.json").write_text(json.dumps(state, indent=2))
    return FileRegistry(root)


def timed(fn: Callable[[], Any], calls: int) -> dict[str, float]:
    """Median, p99 and max of ``calls`` calls of ``fn``, in milliseconds."""
    fn()  # warm the page cache and imports
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000.0)
    times.sort()
    return {
        "calls": calls,
        "median_ms": round(statistics.median(times), 4),
        "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 4),
        "max_ms": round(times[-1], 4),
    }


def replica_check(registry: FileRegistry) -> Callable[[], Any]:
    """What ``serving.state.Watcher`` asks the registry at each tick."""

    def check() -> Any:
        return registry.resolve("production"), registry.rollout()

    return check


def record(root: Path, records: list[DecisionRecord], batch: int) -> dict[str, Any]:
    store = ExperimentLog(root)
    started = time.perf_counter()
    for at in range(0, len(records), batch):
        store.append(records[at : at + batch])
    seconds = time.perf_counter() - started
    return {
        "decisions": len(records),
        "batch": batch,
        "seconds": round(seconds, 2),
        "decisions_per_s": round(len(records) / seconds),
        "file_mb": round(store.path.stat().st_size / 1e6, 1),
        "bytes_per_decision": round(store.path.stat().st_size / len(records)),
    }


def reads(registry: FileRegistry, name: str, repeats: int) -> dict[str, Any]:
    found = registry.records(experiments=[name]).records
    one = history(found, name)
    return {
        "experiment": name,
        "decisions_in_history": len(one.looks),
        "one_history": timed(lambda: history(registry.records(experiments=[name]).records, name), repeats),
        "experiment_names": timed(registry.experiment_names, repeats),
        "latest_25_records": timed(lambda: registry.latest_records(25), repeats),
        "every_record": timed(lambda: registry.records(), 1),
    }


def legacy_baseline(root: Path, records: list[DecisionRecord], calls: int) -> dict[str, Any]:
    """The former layout: the audit log inside ``state.json``; its replica check and migration."""
    registry = fresh_registry(root)
    state = json.loads((root / "state.json").read_text())
    state["log"] = [_legacy_entry(r) for r in records]
    (root / "state.json").write_text(json.dumps(state, indent=2))
    size = (root / "state.json").stat().st_size
    check = timed(replica_check(registry), calls)
    started = time.perf_counter()
    registry.set_holdout(0.0)  # the first write moves the log into records
    migration_s = time.perf_counter() - started
    return {
        "decisions_in_state_json": len(records),
        "state_json_bytes": size,
        "replica_check": check,
        "migration_s": round(migration_s, 2),
        "state_json_bytes_after_migration": (root / "state.json").stat().st_size,
        "migrated_records": len(registry.records().records),
        "replica_check_after_migration": timed(replica_check(registry), calls),
    }


def _legacy_entry(r: DecisionRecord) -> dict[str, Any]:
    """A decision as the former audit log held it (``recsys.experiments.arms`` wrote it so)."""
    detail: dict[str, Any] = {
        "control_version": r.control_version,
        "share": r.share,
        "reasons": "; ".join(r.reasons),
    }
    for name in ("listening", "sequential"):
        interval = getattr(r, name)
        if interval is not None:
            detail |= {f"{name}_{k}": v for k, v in interval.model_dump().items()}
    detail["srm_p_value"] = r.srm_p_value
    for arm_name, values in r.arms.items():
        detail |= {f"{arm_name}_{k}": v for k, v in values.items()}
    detail["slices"] = r.slices
    for arm_name, health in r.health.items():
        detail |= {f"{arm_name}_{k}": v for k, v in health.model_dump().items()}
    return {"at": r.at.isoformat(), "action": f"rollout {r.experiment}: {r.action}", "version": r.treatment,
            "detail": detail}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--experiments", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1000, help="decisions per append (one fsync each)")
    parser.add_argument("--calls", type=int, default=5000, help="replica checks timed")
    parser.add_argument("--repeats", type=int, default=20, help="timed reads of one history")
    parser.add_argument("--singles", type=int, default=200, help="decisions recorded one by one")
    parser.add_argument("--baseline-decisions", type=int, default=10_000)
    parser.add_argument("--baseline-calls", type=int, default=30)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    records = decisions(args.decisions, args.experiments)
    with tempfile.TemporaryDirectory(prefix="experiment-store-") as tmp:
        root = Path(tmp) / "models"
        registry = fresh_registry(root)
        written = record(root, records, args.batch)
        later = START + timedelta(minutes=args.decisions)
        single = [
            r.model_copy(update={"at": later + timedelta(minutes=i)})
            for i, r in enumerate(records[: args.singles])
        ]
        singles = timed(iter_call(registry.record_decision, single), len(single) - 1)
        result = {
            "decisions": args.decisions,
            "experiments": args.experiments,
            "append": written,
            "record_decision_one_by_one": singles,
            "replica_check": timed(replica_check(registry), args.calls),
            "state_json_bytes": (root / "state.json").stat().st_size,
            "reads": reads(registry, f"exp-{min(42, args.experiments - 1):04d}", args.repeats),
            "baseline_audit_log_in_state_json": legacy_baseline(
                Path(tmp) / "legacy", records[: args.baseline_decisions], args.baseline_calls
            ),
        }
    return emit(result, args.output)


def iter_call(fn: Callable[[DecisionRecord], Any], items: list[DecisionRecord]) -> Callable[[], Any]:
    """A no-argument callable that passes the next of ``items`` to ``fn`` at each call."""
    queue = iter(items)
    return lambda: fn(next(queue))


if __name__ == "__main__":
    sys.exit(main())
