"""Training pipeline overhead: time spent around implicit's ``fit``, and peak memory.

Generates a synthetic Million-Playlist-shaped data set (cached as Parquet), runs
``recsys train`` on it in a child process, and reads the per-phase timings the
pipeline records in the model manifest. Overhead = load + split + baselines +
evaluation + export/registration, as a share of the ALS fit time, measured in the
same run.

    python benchmarks/pipeline_overhead.py --scale 0.165            # ~10M interactions
    python benchmarks/pipeline_overhead.py --scale 1.0 --no-evaluate --iterations 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import emit  # benchmarks/report.py, next to this script

from recsys.registry.manifest import MANIFEST_FILE

FIT_PHASES = ("fit",)


def ensure_data(scale: float, seed: int, cache: Path) -> tuple[Path, float]:
    path = cache / f"synth-{scale}-{seed}.parquet"
    if path.exists():
        return path, 0.0
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys",
            "data",
            "synth",
            "--scale",
            str(scale),
            "--seed",
            str(seed),
            "--output",
            str(path),
        ],
        check=True,
    )
    return path, time.perf_counter() - start


def parse_timings(output: str) -> dict[str, float]:
    """The ``timings: load 1.23s, fit 4.56s, ...`` line that ``recsys train`` prints."""
    line = next((ln for ln in output.splitlines() if ln.startswith("timings:")), "")
    return {name: float(value) for name, value in re.findall(r"(\w+) ([\d.]+)s", line)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.165)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--no-evaluate", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path("bench-out"))
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--knn-weight", type=float, default=None, help="override the blend share (0 = plain ALS)"
    )
    parser.add_argument(
        "--warm", action="store_true", help="train twice; report the second run (cached baselines)"
    )
    parser.add_argument("--eval-playlists", type=int, default=None, help="cap on test playlists")
    args = parser.parse_args()

    data, synth_s = ensure_data(args.scale, args.seed, args.cache)
    with tempfile.TemporaryDirectory(dir=args.cache) as registry:
        command = [
            sys.executable,
            "-m",
            "recsys",
            "train",
            "--data",
            str(data),
            "--registry",
            registry,
            "--iterations",
            str(args.iterations),
            "--factors",
            str(args.factors),
            "--device",
            "cpu",
        ]
        if args.no_evaluate:
            command.append("--no-evaluate")
        if args.eval_playlists is not None:
            command += ["--eval-playlists", str(args.eval_playlists)]
        if args.knn_weight is not None:
            command += ["--knn-weight", str(args.knn_weight)]
        if args.warm:
            subprocess.run(command, check=True, capture_output=True, text=True)
        start = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        version = re.search(r"registered model (\d+\.\d+)", done.stdout)
        assert version, done.stdout
        manifest = json.loads((Path(registry) / "versions" / version.group(1) / MANIFEST_FILE).read_text())
    # the manifest is written during registration, so the registration time comes from the CLI's report
    timings = dict(manifest["timings"]) | parse_timings(done.stdout)
    fit = sum(timings.get(p, 0.0) for p in FIT_PHASES)
    around = {k: v for k, v in timings.items() if k not in FIT_PHASES and k != "iteration_mean"}
    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "data": {k: manifest["lineage"][k] for k in ("playlists", "tracks", "interactions")},
        "params": manifest["params"] | {"evaluate": not args.no_evaluate, "warm": args.warm},
        "baseline_seconds": manifest["metrics"].get("seconds", {}),
        "synth_generation_s": round(synth_s, 2),
        "wall_s": round(wall, 2),
        "fit_s": round(fit, 2),
        "iteration_mean_s": round(timings["iteration_mean"], 3),
        "around_fit_s": {k: round(v, 2) for k, v in around.items()},
        "unaccounted_s": round(wall - sum(timings.get(k, 0.0) for k in timings if k != "iteration_mean"), 2),
        "overhead_share_of_fit": round(sum(around.values()) / fit, 4),
        "peak_rss_gib": round(peak_kib / 2**20, 2),
        "metrics": manifest["metrics"].get("methods", {}),
    }
    return emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
