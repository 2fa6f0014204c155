"""Ten experiments at once: one controller pass, the report and the dashboard over all of them.

Builds a registry with a production version and ten treatments (tiny models of the same
synthetic playlists), starts ten experiments with their own salts at different steps of
the ladder, and writes the stream worker's counters for all of them (both arms and their
platform and country slices, folded event by event with the worker's own functions) to a
JSON file of the ``/stats/`` shape. Then it measures:

- one pass of the controller over the ten experiments (``recsys rollout auto --once``'s
  loop, in process: one read of the counters, ten decisions, each recorded with fsync),
  repeated ``--passes`` times;
- the same pass as the command an operator or cron runs (a new process each time), beside
  ``recsys rollout status`` as the cost of starting the command at all;
- reading and rendering one experiment's report, and the dashboard page with all ten.

It also checks the assignment: over ``--users`` simulated user ids, each experiment's
treatment and control slice hold the shares the plan gives them.

    python benchmarks/ten_experiments.py --output benchmarks/results/ten-experiments.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from api_keys import authorization, new_api_key  # benchmarks/api_keys.py
from fastapi.testclient import TestClient
from report import emit  # benchmarks/report.py

from recsys.cli.rollout import _guardrails, _one_pass
from recsys.data.formats import DataFormat, write_synth
from recsys.data.synth import SynthSpec, generate
from recsys.events.schemas import FeedbackEvent
from recsys.events.weights import FeedbackType
from recsys.experiments.aggregates import add_to_arm, add_to_user, arms_of
from recsys.experiments.assignment import assign
from recsys.experiments.report.history import history
from recsys.experiments.report.render import render_report
from recsys.models.als import ALSParams
from recsys.models.device import Device
from recsys.registry.plan import STAGES, Experiment
from recsys.registry.store import FileRegistry
from serving.app import create_app
from serving.settings import ServingSettings
from training.pipeline import TrainRequest, train

EXPERIMENTS = 10
TINY = ALSParams(factors=8, iterations=2, knn_weight=0.0)
PLATFORMS, COUNTRIES = ("ios", "android", "web"), ("US", "DE", "BR", "JP")


def build_registry(root: Path) -> FileRegistry:
    data = generate(SynthSpec(playlists=300, tracks=2_000, seed=3))
    path = root / "data.parquet"
    write_synth(data, path, fmt=DataFormat.PARQUET)
    registry = FileRegistry(root / "models")
    for _ in range(EXPERIMENTS + 1):
        train(TrainRequest(data=path, params=TINY, device=Device.CPU, evaluate=False), registry)
    registry.promote("2.1", force=True)
    for i in range(EXPERIMENTS):
        share = STAGES[i % 4]  # 1%, 2%, 5%, 10%: ten experiments side by side
        registry.set_experiment(Experiment(name=f"exp{i}", treatment=f"2.{i + 2}", share=share))
    return registry


def worker_counters(registry: FileRegistry, users: int, seed: int) -> dict[str, dict[str, float]]:
    """Counters as the stream worker keeps them, for ``users`` listeners assigned by the real plan."""
    rng = np.random.default_rng(seed)
    plan, production = registry.rollout(), registry.production()
    counters: dict[str, dict[str, float]] = {}
    for u in range(users):
        user = f"u{seed}-{u}"
        arm = assign(user_id=user, plan=plan)
        version = arm.version or production
        platform, country = rng.choice(PLATFORMS), rng.choice(COUNTRIES)
        totals: dict[str, dict[str, int]] = {}
        for _ in range(1 + rng.poisson(4)):
            completed = rng.random() < 0.5
            kind = FeedbackType.COMPLETE if completed else FeedbackType.SKIP
            ms = 210_000 if completed else int(rng.integers(2_000, 30_000))
            events = [FeedbackEvent(user_id=user, track_id="t", type=kind, listen_ms=ms)]
            if not completed and rng.random() < 0.1:
                events.append(FeedbackEvent(user_id=user, track_id="t", type=FeedbackType.HATE))
            for event in events:
                labelled = event.model_copy(
                    update={
                        "model_version": version,
                        "variant": arm.variant,
                        "platform": platform,
                        "country": country,
                    }
                )
                for key in arms_of(labelled):
                    before = totals.get(key, {})
                    counters[key] = add_to_arm(
                        counters.get(key, {}), labelled, new_user=key not in totals, user_before=before
                    )
                    totals[key] = add_to_user(before, labelled)
    return counters


def timed(action: Any, repeat: int) -> dict[str, float]:
    took = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        took.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(took), 2), "max_ms": round(max(took), 2)}


def shares_check(registry: FileRegistry, users: int) -> dict[str, dict[str, float]]:
    plan = registry.rollout()
    counts = Counter(assign(user_id=f"check-{u}", plan=plan).variant for u in range(users))
    return {
        e.name: {
            "share": e.share,
            "treatment": counts[f"{e.name}:treatment"] / users,
            "control": counts[f"{e.name}:control"] / users,
        }
        for e in plan.experiments
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--cli-passes", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry = build_registry(root)
        stats = root / "stats.json"
        counters = worker_counters(registry, args.users, seed=0)
        stats.write_text(json.dumps(counters))
        guardrails = _guardrails(
            min_users=10**9,  # hold every step: each pass makes the same ten decisions
            min_step_s=0,
            alpha=0.05,
            max_hate_increase=0.01,
            max_skip_increase=0.05,
            max_p99_ms=250.0,
            max_error_rate=0.01,
        )
        in_process = timed(lambda: _one_pass(registry, None, str(stats), [], guardrails), args.passes)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
        command = [sys.executable, "-m", "recsys", "rollout", "auto", "--once", "--stats", str(stats)]
        command += ["--min-users", str(10**9), "--registry", str(registry.root)]
        cli = timed(
            lambda: subprocess.run(command, env=env, check=True, capture_output=True), args.cli_passes
        )
        status = [sys.executable, "-m", "recsys", "rollout", "status", "--registry", str(registry.root)]
        startup = timed(
            lambda: subprocess.run(status, env=env, check=True, capture_output=True), args.cli_passes
        )
        found = registry.records().records
        shares = shares_check(registry, args.users)
        report = timed(lambda: render_report(history(registry.records().records, "exp3")), 5)
        settings = ServingSettings(
            registry=registry.root,
            feedback_sink="memory://",
            stats_url=str(stats),
            follow_model_events=False,
            follow_user_updates=False,
        )
        key = authorization(new_api_key(registry.root, "dashboard")[1])
        with TestClient(create_app(settings), headers=key) as client:
            page = client.get("/dashboard")
            panels = page.text.count('class="experiment"')
            dashboard = timed(lambda: client.get("/dashboard").raise_for_status(), 5)
    result = {
        "experiments": EXPERIMENTS,
        "listeners_in_counters": args.users,
        "arms_in_counters": len(counters),
        "controller_pass_in_process": in_process,
        "controller_pass_command": cli,
        "command_startup_baseline": {"command": "recsys rollout status", **startup},
        "decisions_recorded": sum(1 for r in found if r.kind == "decision"),
        "report_one_experiment": report,
        "dashboard": {**dashboard, "status": page.status_code, "experiment_panels": panels},
        "assignment_shares": shares,
    }
    return emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
