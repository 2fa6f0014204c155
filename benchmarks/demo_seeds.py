"""``recsys demo --loop`` over seeds: does the demo's story hold, run after run?

For each seed, the whole demo runs as a user runs it (its own work folder, local Kafka, API,
stream worker, trainer, simulated listeners, the controller), and its registry is read
afterwards: how the retrained version's experiment ended, how the scrambled version's
ended, whether any experiment was left running, and the demo's own last line.

    python benchmarks/demo_seeds.py --seeds 0 1 2 3 4 5 6 7 8 9 \\
        --output benchmarks/results/demo-seeds.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import emit  # benchmarks/report.py

from recsys.registry.store import FileRegistry

TIMEOUT_S = 1800
OUTCOME = "demo outcome:"


def one_seed(seed: int, root: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")} | {"COLUMNS": "200"}
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys",
            "demo",
            "--workdir",
            "d",
            "--loop",
            "--no-hold",
            "--seed",
            str(seed),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    result: dict[str, Any] = {
        "seed": seed,
        "exit": done.returncode,
        "seconds": round(time.monotonic() - started),
    }
    registry = FileRegistry(root / "d" / "models")
    result["left_running"] = [e.name for e in registry.rollout().experiments]
    for name, label in (("v2.2", "retrained"), ("scrambled", "scrambled")):
        decisions = registry.decisions(name)
        last = decisions[-1] if decisions else None
        shares = [d.share for d in decisions if d.action == "advance"]
        result[label] = {
            "version": last.treatment if last else None,
            "outcome": last.action if last else None,
            "decisions": len(decisions),
            "widest_share": max(shares, default=0.01),
            "reasons": last.reasons if last else [],
        }
    result["production"] = registry.production()
    lines = [line for line in done.stdout.splitlines() if line.startswith(OUTCOME)]
    result["outcome_line"] = lines[-1] if lines else None
    if done.returncode:
        result["stderr_tail"] = done.stderr[-2000:]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_seed(seed, Path(tmp)))
        print(runs[-1], file=sys.stderr, flush=True)
    result = {
        "seeds": args.seeds,
        "retrained_promoted": sum(r["retrained"]["outcome"] == "complete" for r in runs),
        "scrambled_rolled_back": sum(r["scrambled"]["outcome"] == "rollback" for r in runs),
        "left_running": sum(bool(r["left_running"]) for r in runs),
        "failed_runs": sum(r["exit"] != 0 for r in runs),
        "runs": runs,
    }
    return emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
