"""Exactly once under SIGKILL, over many seeds: the fault test of the stream worker, run once
per seed, each seed its own broker and its own order of kills and delays.

For each seed, ``tests/integration/test_exactly_once.py`` posts feedback over HTTP while it
SIGKILLs the stream worker (right after a request, between commits, while it recovers,
while a second worker takes half its partitions), the API and the broker, in an order and
with delays drawn from the seed; it then checks that the counters of the worker that ends
the run, and of a worker rebuilt from the changelogs alone, equal those of the unique
event ids in the topic. The suite runs seed 1; this runs as many as asked. With ``--busy N``
each seed runs beside N processes that keep a core busy each, so every step is slower and
the races of a loaded machine (rebalances during a restore, late fetches) come up.

    python benchmarks/exactly_once_faults.py --seeds 2 3 4 5 6 7 8 9 \\
        --output benchmarks/results/exactly-once-faults.json
    python benchmarks/exactly_once_faults.py --busy 2 --seeds 10 11 12 13 14 15 \\
        --output benchmarks/results/exactly-once-faults-busy.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import emit  # benchmarks/report.py, next to this script

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/integration/test_exactly_once.py"


BUSY_LOOP = "while True: pass"


def run_seed(seed: int, busy: int) -> dict[str, Any]:
    """One seed of the fault test beside ``busy`` spinning processes: passed or not, its wall
    time, and what it did."""
    spinners = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
    try:
        return _run_seed(seed) | {"busy_processes": busy}
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def _run_seed(seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "report.jsonl"
        env = os.environ | {"EXACTLY_ONCE_SEEDS": str(seed), "EXACTLY_ONCE_REPORT": str(record)}
        started = time.monotonic()
        done = subprocess.run(
            # each seed in a base folder of its own, kept apart from other test sessions
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--basetemp",
                f"{tmp}/base",
                TEST,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        outcome: dict[str, Any] = {
            "seed": seed,
            "passed": done.returncode == 0,
            "seconds": round(time.monotonic() - started, 1),
        }
        if record.exists():
            outcome |= json.loads(record.read_text().splitlines()[-1])
        if done.returncode != 0:
            outcome["failure"] = _failure(done.stdout)
            outcome["kept"] = _keep(Path(tmp) / "base", seed)
    print(json.dumps({k: v for k, v in outcome.items() if k != "failure"}), file=sys.stderr)
    return outcome


def _failure(output: str) -> str:
    """The assertion lines of pytest's report (``E   ...``), else the end of the output."""
    lines = [line for line in output.splitlines() if line.startswith("E ")]
    return "\n".join(lines[:40]) if lines else output[-3000:]


def _keep(base: Path, seed: int) -> str:
    """Copy a failed seed's process logs (workers, API, broker) out of its base folder."""
    kept = Path(tempfile.gettempdir()) / f"exactly-once-seed-{seed}-{int(time.time())}"
    for log in base.rglob("*.log"):
        target = kept / log.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(log, target)
    return str(kept)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(2, 10)))
    parser.add_argument("--busy", type=int, default=0, help="processes spinning on a core each, per seed")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    runs = [run_seed(seed, args.busy) for seed in args.seeds]
    summary = {
        "seeds": len(runs),
        "passed": sum(run["passed"] for run in runs),
        "events": sum(run.get("events", 0) for run in runs),
        "kills": sum(len(run.get("moments", ())) for run in runs),
        "busy_processes": args.busy,
    }
    return emit({"summary": summary, "runs": runs}, args.output)


if __name__ == "__main__":
    sys.exit(main())
