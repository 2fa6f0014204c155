"""The experiment loop with simulated listeners: a better model ramps to 100%, a bad one is rolled back.

Every part runs as the product runs it, each in its own process: a local Kafka broker,
``recsys serve`` (feedback to Kafka), ``recsys stream worker`` (per-arm counters), rounds of
``recsys simulate`` (new listeners each round), and ``recsys rollout advance`` after each
round. On a synthetic set (``--scale``):

1. 2.1 (a weak model: 8 factors, 2 iterations, no item-kNN) is production; 2.2 (the
   default model) starts at 1%. Rounds continue until the controller completes (promotes
   2.2) or rolls it back.
2. 2.3, a model trained on scrambled track ids, starts at 1% against the new production;
   rounds continue until the controller decides.
3. An A/A experiment: production against itself, through the same pipeline.

The controller also reads the API's ``/metrics`` (serving guardrails). Reports each
decision with the arms' numbers, and how many listeners it took; ``--reports DIR`` also
writes each experiment's HTML report (``recsys report``).

    python benchmarks/experiment_loop.py --scale 0.003 --listeners 1500 --reports reports
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

import numpy as np
from api_keys import new_api_key  # benchmarks/api_keys.py
from environment import cli_env  # benchmarks/environment.py
from feedback_loop import start, stop, wait_http
from report import emit

from deploy.kafka_launcher import LocalKafka, free_port
from recsys.data.formats import DataFormat, write_synth
from recsys.data.synth import SynthSpec, generate
from recsys.models.als import ALSParams
from recsys.models.device import Device
from recsys.registry.store import FileRegistry
from streams.admin import create_topics
from training.pipeline import TrainRequest, train


def models(folder: Path, scale: float) -> tuple[FileRegistry, SynthSpec]:
    spec = SynthSpec.at_scale(scale, seed=3)
    data = folder / "data.parquet"
    write_synth(generate(spec), data, fmt=DataFormat.PARQUET)
    registry = FileRegistry(folder / "models")
    weak = ALSParams(factors=8, iterations=2, knn_weight=0.0)
    for params in (weak, ALSParams()):
        train(TrainRequest(data=data, params=params, device=Device.CPU, evaluate=False), registry)
    registry.promote("2.1", force=True)
    return registry, spec


def scrambled_version(registry: FileRegistry, spec: SynthSpec, folder: Path) -> str:
    """A deliberately bad model: trained on the same playlists with every track id swapped
    for another at random, so what it learned says nothing about the real tracks."""
    data = generate(spec)
    data.tracks = np.random.default_rng(0).permutation(data.n_tracks).astype(np.int32)[data.tracks]
    path = folder / "scrambled.parquet"
    write_synth(data, path, fmt=DataFormat.PARQUET)
    return train(TrainRequest(data=path, device=Device.CPU, evaluate=False), registry).manifest.version


def recsys(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "recsys", *args], env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise SystemExit(f"recsys {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def run_experiment(
    name: str, version: str, env: dict[str, str], spec: SynthSpec, args: argparse.Namespace, rounds: int
) -> dict[str, Any]:
    registry = ["--registry", env["RECSYS_REGISTRY"]]
    recsys("rollout", "set", "--treatment", version, "--share", "0.01", "--name", name, *registry, env=env)
    data = ["--playlists", str(spec.playlists), "--tracks", str(spec.tracks), "--data-seed", str(spec.seed)]
    decisions, listeners = [], 0
    for round_ in range(rounds):
        recsys(
            "simulate",
            "--api",
            env["API"],
            "--users",
            str(args.listeners),
            "--seed",
            str(1000 * len(name) + round_),
            *data,
            env=env,
        )
        listeners += args.listeners
        time.sleep(args.settle_s)  # the worker counts what was just posted
        out = recsys(
            "rollout", "advance", name, "--stats", env["STATS"], "--metrics", f"{env['API']}/metrics",
            "--min-users", str(args.min_users), "--min-step-s", "0", *registry, env=env,
        )  # fmt: skip
        last = FileRegistry(Path(env["RECSYS_REGISTRY"])).records().records[-1]
        decisions.append(
            {"listeners_so_far": listeners, "action": last.summary, "detail": last.model_dump(mode="json")}
        )
        if last.summary.endswith(("complete", "rollback")):
            break
    if args.reports:
        recsys("report", name, "--out", str(args.reports / f"{name}.html"), *registry, env=env)
    return {
        "experiment": name,
        "treatment": version,
        "decisions": decisions,
        "listeners": listeners,
        "last_output": out[-2000:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.003)
    parser.add_argument("--listeners", type=int, default=1500, help="new simulated listeners per round")
    parser.add_argument("--min-users", type=int, default=30, help="users per arm before a step can end")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--reports", type=Path, default=None, help="write each experiment's HTML report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        registry, spec = models(folder, args.scale)
        kafka = LocalKafka(folder / "kafka", port=free_port(), controller_port=free_port())
        kafka.start()
        create_topics(kafka.bootstrap)
        api, web = free_port(), free_port()
        env = cli_env() | {
            "RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "RECSYS_FEEDBACK_SINK": f"kafka://{kafka.bootstrap}",
            "RECSYS_MODEL_EVENTS": f"kafka://{kafka.bootstrap}",
            "RECSYS_REGISTRY": str(registry.root),
            "RECSYS_DATA_DIR": str(folder / "stream-data"),
            "RECSYS_WEB_PORT": str(web),
            "RECSYS_RETRAIN_CHECK_S": "0",
            "API": f"http://127.0.0.1:{api}",
            "STATS": f"http://127.0.0.1:{web}/stats/",
            "RECSYS_API_KEY": new_api_key(registry.root, "experiment-loop")[1],  # `recsys simulate`'s
        }
        processes = [
            start(["serve", "--port", str(api)], env, folder / "serve.log"),
            start(["stream", "worker"], env, folder / "worker.log"),
        ]
        try:
            wait_http(f"http://127.0.0.1:{api}/readyz")
            wait_http(env["STATS"])
            better = run_experiment("better", "2.2", env, spec, args, args.rounds)
            bad = run_experiment(
                "scrambled", scrambled_version(registry, spec, folder), env, spec, args, args.rounds
            )
            same = run_experiment("aa", str(registry.production()), env, spec, args, args.rounds)
            result = {
                "cores": os.cpu_count(),
                "better": better,
                "bad": bad,
                "aa": same,
                "production": registry.production(),
            }
        finally:
            stop(processes)
            kafka.stop()
    return emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
