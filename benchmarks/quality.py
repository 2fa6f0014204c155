"""Offline quality of the default model against its baselines, through ``recsys evaluate``.

Runs the continuation protocol for each data set and split seed in a child process
(the command a user would run), then prints per-seed and mean rows as a markdown
table, followed by the run's provenance, and writes them as JSON (``rows``, with the
provenance under ``provenance``).

    python benchmarks/quality.py --data ../shared/data/yes_small \\
        ../shared/data/aotm2011_mcfee_segments/aotm2011_mcfee_segments_fold0.tsv --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from provenance import markdown, provenance, with_provenance  # benchmarks/provenance.py

COLUMNS = ("r_precision", "ndcg@500", "recall@50", "hr@10", "clicks", "coverage@10", "popularity@10")


def evaluate(data: Path, seed: int, extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "recsys",
                "evaluate",
                "--data",
                str(data),
                "--seed",
                str(seed),
                "--device",
                "cpu",
                "--output",
                str(out),
                *extra,
            ],
            check=True,
            capture_output=True,
        )
        report: dict[str, Any] = json.loads(out.read_text())
        report["wall_s"] = time.perf_counter() - start
        return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("extra", nargs="*", help="extra options for recsys evaluate (after --)")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    print("| data | method | seed | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for data in args.data:
        per_method: dict[str, list[dict[str, float]]] = {}
        for seed in args.seeds:
            report = evaluate(data, seed, args.extra)
            for method, metrics in report["methods"].items():
                per_method.setdefault(method, []).append(metrics)
                rows.append({"data": data.name, "method": method, "seed": seed, **metrics})
                print(
                    f"| {data.name} | {method} | {seed} | "
                    + " | ".join(f"{metrics[c]:.4f}" for c in COLUMNS)
                    + " |"
                )
        for method, runs in per_method.items():
            mean = {c: sum(r[c] for r in runs) / len(runs) for c in COLUMNS}
            rows.append({"data": data.name, "method": method, "seed": "mean", **mean})
            print(
                f"| {data.name} | **{method}** | mean | "
                + " | ".join(f"**{mean[c]:.4f}**" for c in COLUMNS)
                + " |"
            )
    record = provenance()
    print("\n" + markdown(record), end="")
    if args.output:
        args.output.write_text(json.dumps(with_provenance({"rows": rows}, record), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
