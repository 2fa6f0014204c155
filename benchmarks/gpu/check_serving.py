"""The serving app on onnxruntime's CUDA provider: provider in use, answers, latency under load.

Runs ``recsys serve`` over one registry twice, with ``RECSYS_PREFER_GPU=true`` and with
``false``, and checks what ``GET /v1/models`` and the server's log say each one scores on,
and that the recommendations answered over HTTP are the same on both and the same as
numpy's reference scorer in this process (same model version, same requests, sent
concurrently so that the server scores them in batches). Then it runs
``benchmarks/serving_load.py`` with each setting: an open-loop rate, then a saturation probe.
Without ``--registry`` it generates the serving benchmark's 200k-track catalogue
(``benchmarks/README.md``, section 5) and trains a version on it.

Exits non-zero when the server asked for the GPU does not score on ``--expect-provider``,
when an answer differs, or when a sustained load run has errors.

    python benchmarks/gpu/check_serving.py --output gpu-serving.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from deploy.kafka_launcher import free_port
from recsys.access.tokens import authorization
from recsys.registry.artifacts import LoadedModel
from recsys.registry.store import FileRegistry
from recsys.scoring.recommender import Query, VersionRecommender
from recsys.scoring.topk import CPU_PROVIDER, CUDA_PROVIDER, numpy_topk

BENCHMARKS = Path(__file__).resolve().parents[1]
SETTINGS = {
    "gpu": {"RECSYS_PREFER_GPU": "true", "RECSYS_LOG_LEVEL": "INFO"},
    "cpu": {"RECSYS_PREFER_GPU": "false", "RECSYS_LOG_LEVEL": "INFO"},
}
SERVING_LINE = re.compile(r"model (\S+) serving \(was \S+\) on (\w+)")
RTOL, ATOL = 1e-4, 1e-6
"""Scores agree within this (float32 products summed in another order, another fold-in)."""


@dataclass
class Answer:
    """One recommendation list: best-first tracks, their scores, the version that answered."""

    version: str
    tracks: list[str]
    scores: list[float]


def serving_load() -> ModuleType:
    """``benchmarks/serving_load.py``: its server launcher, ``GET /v1/models`` reader, API key, CLI env."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("serving_load")


def with_provenance(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the commit, date, machine and package versions of this run first
    (``benchmarks/provenance.py``)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    record: dict[str, Any] = importlib.import_module("provenance").with_provenance(result)
    return record


def recsys(*args: str) -> None:
    """Run the ``recsys`` CLI, without this process's ``RECSYS_*`` settings."""
    env = serving_load().cli_env()
    subprocess.run([sys.executable, "-m", "recsys", *args], check=True, env=env, stdout=subprocess.DEVNULL)


def build_registry(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """Generate playlists, train a version on them and make it production; seconds per step."""
    size = (
        ["--scale", str(args.scale)]
        if args.scale is not None
        else ["--playlists", str(args.playlists), "--tracks", str(args.tracks)]
    )
    data, registry = folder / "playlists.parquet", folder / "models"
    started = time.perf_counter()
    recsys("data", "synth", *size, "--output", str(data))
    generated = time.perf_counter()
    recsys(
        "train", "--data", str(data), "--registry", str(registry), "--no-evaluate", "--device", args.device
    )
    recsys("models", "promote", "latest", "--force", "--registry", str(registry))
    return {"synth_s": round(generated - started, 1), "train_s": round(time.perf_counter() - generated, 1)}


def describe(registry: Path) -> dict[str, Any]:
    """The production version: its size, where it was trained and how long its fit took."""
    manifest = FileRegistry(registry).manifest("production")
    return {
        "version": manifest.version,
        "algorithm": manifest.algorithm,
        "playlists": manifest.lineage.get("playlists"),
        "catalog": manifest.lineage.get("tracks"),
        "interactions": manifest.lineage.get("interactions"),
        "trained_on": manifest.device,
        "fit_s": round(manifest.timings["fit"], 2) if "fit" in manifest.timings else None,
    }


def sample_requests(model: LoadedModel, n: int, seed: int) -> list[dict[str, Any]]:
    """Request bodies: mostly new playlists from 20 seed tracks, every fourth a trained playlist,
    every fifth with excluded tracks, k of 10, 20 or 100."""
    rng = random.Random(seed)
    tracks = [str(t) for t in model.item_ids.ids.to_pylist()]
    playlists = [str(p) for p in model.row_ids.ids.to_pylist()]
    bodies: list[dict[str, Any]] = []
    for i in range(n):
        body: dict[str, Any] = {"user_id": f"check-{i}", "k": (10, 20, 100)[i % 3]}
        if i % 4 == 0:
            body["playlist_id"] = rng.choice(playlists)
        else:
            body["seed_tracks"] = rng.sample(tracks, 20)
        if i % 5 == 0:
            body["exclude_tracks"] = rng.sample(tracks, 5)
        bodies.append(body)
    return bodies


def reference(model: LoadedModel, bodies: list[dict[str, Any]]) -> list[Answer]:
    """numpy's answer to each body: the recommender's own request preparation, then
    :func:`numpy_topk` over every track in float32."""
    recommender = VersionRecommender(model, approximate=False)
    answers = []
    for body in bodies:
        query = Query(
            playlist_id=body.get("playlist_id"),
            tracks=body.get("seed_tracks", ()),
            exclude=body.get("exclude_tracks", ()),
            k=body["k"],
        )
        batch = recommender.scoring_batch([query])
        top = numpy_topk(
            batch.users,
            model.item_factors,
            batch.exclude,
            query.k,
            candidates=batch.candidates,
            candidate_scores=batch.candidate_scores,
            weight=batch.weight,
        )
        valid = np.isfinite(top.scores[0])
        tracks = model.item_ids.externals(top.indices[0][valid])
        answers.append(Answer(model.version, tracks, [float(s) for s in top.scores[0][valid]]))
    return answers


def ask(port: int, key: str, body: dict[str, Any]) -> Answer:
    """``POST /v1/recommendations`` with ``body``, presenting ``key``."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/recommendations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"} | authorization(key),
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    items = payload["items"]
    return Answer(payload["model_version"], [i["track_id"] for i in items], [i["score"] for i in items])


def serve_and_ask(
    registry: Path, settings: dict[str, str], bodies: list[dict[str, Any]], log: Path, concurrency: int
) -> tuple[dict[str, Any], list[Answer]]:
    """Start the server with ``settings``, read its providers, send ``bodies``, stop it."""
    generator = serving_load()
    port = free_port()
    started = time.perf_counter()
    server = generator.start_server(registry, port, settings, log)
    ready = time.perf_counter() - started
    try:
        with generator.api_key(registry, "check-serving") as key:
            providers = generator.server_providers(port, key)
            with ThreadPoolExecutor(concurrency) as pool:
                answers = list(pool.map(partial(ask, port, key), bodies))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    text = log.read_text(errors="replace")
    report = {
        "settings": settings,
        "seconds_to_ready": round(ready, 1),
        "providers": providers,
        "logged_providers": dict(SERVING_LINE.findall(text)),
        "scoring_log": [
            line.split(" ", 2)[-1] for line in text.splitlines() if "recsys.scoring.topk" in line
        ],
    }
    return report, answers


def agreement(x: Answer, y: Answer) -> str:
    """``identical``, ``ties`` (the same up to the order or choice of equally scored tracks)
    or ``differs``."""
    if x.version != y.version or len(x.tracks) != len(y.tracks):
        return "differs"
    if not np.allclose(x.scores, y.scores, rtol=RTOL, atol=ATOL):
        return "differs"
    if x.tracks == y.tracks:
        return "identical"
    return "ties" if only_ties(x, y) else "differs"


def only_ties(x: Answer, y: Answer) -> bool:
    """Shared tracks score alike in both; a track in one list only ties the other's last score."""
    sx, sy = dict(zip(x.tracks, x.scores, strict=True)), dict(zip(y.tracks, y.scores, strict=True))
    shared = sx.keys() & sy.keys()
    if not all(np.isclose(sx[t], sy[t], rtol=RTOL, atol=ATOL) for t in shared):
        return False
    alone = [(sx[t], y.scores[-1]) for t in sx.keys() - shared] + [
        (sy[t], x.scores[-1]) for t in sy.keys() - shared
    ]
    return all(np.isclose(score, last, rtol=RTOL, atol=ATOL) for score, last in alone)


def compare(xs: list[Answer], ys: list[Answer]) -> dict[str, Any]:
    """How many answers are identical, the same up to ties, or different."""
    verdicts = [agreement(x, y) for x, y in zip(xs, ys, strict=True)]
    gaps = [
        float(np.max(np.abs(np.subtract(x.scores, y.scores))))
        for x, y in zip(xs, ys, strict=True)
        if len(x.scores) == len(y.scores) and x.scores
    ]
    return {
        "answers": len(verdicts),
        "identical": verdicts.count("identical"),
        "same_up_to_ties": verdicts.count("ties"),
        "differ": verdicts.count("differs"),
        "first_differing": [i for i, v in enumerate(verdicts) if v == "differs"][:10],
        "max_abs_score_diff": max(gaps, default=0.0),
    }


def load_run(registry: Path, name: str, output: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``serving_load.py`` against a server with setting ``name``; its JSON result."""
    stem = output.parent / f"{output.stem}-load-{name}"
    command = [
        *(sys.executable, str(BENCHMARKS / "serving_load.py"), "--registry", str(registry)),
        *("--rate", str(args.rate), "--seconds", str(args.seconds), "--connections", str(args.connections)),
        *("--output", f"{stem}.json", "--server-log", f"{stem}-server.log"),
        *(arg for key, value in SETTINGS[name].items() for arg in ("--setting", f"{key}={value}")),
    ]
    if args.saturation:
        command += ["--saturation", *map(str, args.saturation)]
    limit = args.seconds + 10 * len(args.saturation) + 300
    try:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=limit)
    except subprocess.SubprocessError as exc:
        return {"failed": str(exc)}
    result: dict[str, Any] = json.loads(Path(f"{stem}.json").read_text())
    return result


def failures(result: dict[str, Any], expect: str) -> list[str]:
    """What went wrong, one line each (empty when the check passed)."""
    version, servers = result["model"]["version"], result["servers"]
    found: list[str] = []
    for name, wanted in (("gpu", expect), ("cpu", CPU_PROVIDER)):
        setting = SETTINGS[name]["RECSYS_PREFER_GPU"]
        reported = servers[name]["providers"].get(version)
        logged = servers[name]["logged_providers"].get(version)
        if reported != wanted:
            found.append(
                f"RECSYS_PREFER_GPU={setting}: GET /v1/models reports {reported}, expected {wanted}"
                + "".join(f"; server log: {line}" for line in servers[name]["scoring_log"][:1])
            )
        if logged != wanted:
            found.append(f"RECSYS_PREFER_GPU={setting}: the server log says {logged}, expected {wanted}")
    for pair, counts in result["answers"].items():
        if counts["differ"]:
            found.append(f"{pair}: {counts['differ']} of {counts['answers']} answers differ")
    for name, run in result.get("load", {}).items():
        wanted = expect if name == "gpu" else CPU_PROVIDER
        if "failed" in run:
            found.append(f"load run {name}: {run['failed']}")
            continue
        if run["server_providers"].get(version) != wanted:
            found.append(f"load run {name}: the server reports {run['server_providers']}, expected {wanted}")
        if run["sustained"]["errors"]:
            errors, rate = run["sustained"]["errors"], run["sustained"]["rate"]
            found.append(f"load run {name}: {errors} errors at {rate} req/s")
    return found


def check_answers(registry: Path, output: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Both servers' providers and answers, against each other and numpy's."""
    model = FileRegistry(registry).load("production")
    bodies = sample_requests(model, args.requests, seed=1)
    expected = reference(model, bodies)
    del model
    servers, answers = {}, {}
    for name, settings in SETTINGS.items():
        log = output.parent / f"{output.stem}-server-{name}.log"
        servers[name], answers[name] = serve_and_ask(registry, settings, bodies, log, args.concurrency)
    return {
        "servers": servers,
        "answers": {
            "gpu_setting_vs_cpu_setting": compare(answers["gpu"], answers["cpu"]),
            "gpu_setting_vs_numpy": compare(answers["gpu"], expected),
            "cpu_setting_vs_numpy": compare(answers["cpu"], expected),
        },
    }


def run(registry: Path, built: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    """The whole check over ``registry``: the summary written to ``--output``."""
    import onnxruntime as ort

    result: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "expected_provider": args.expect_provider,
        "cores": os.cpu_count(),
        "build": built,
        "model": describe(registry),
    }
    result |= check_answers(registry, args.output, args)
    version = result["model"]["version"]
    if result["servers"]["gpu"]["providers"].get(version) != args.expect_provider:
        # not the provider under test: latency under load would say nothing about it
        result["load"], result["load_skipped"] = {}, "the GPU setting's provider is not the expected one"
        return result
    result["load"] = {name: load_run(registry, name, args.output, args) for name in SETTINGS}
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("gpu-serving.json"))
    parser.add_argument("--registry", type=Path, default=None, help="serve its production version")
    parser.add_argument("--playlists", type=int, default=32_500, help="generated playlists")
    parser.add_argument("--tracks", type=int, default=232_000, help="generated catalogue to draw from")
    parser.add_argument("--scale", type=float, default=None, help="generate at this scale instead")
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto", help="of training")
    parser.add_argument("--expect-provider", default=CUDA_PROVIDER, help="of the server asked for the GPU")
    parser.add_argument("--requests", type=int, default=300, help="requests compared between servers")
    parser.add_argument("--concurrency", type=int, default=8, help="of the compared requests")
    parser.add_argument("--rate", type=float, default=300, help="req/s of each load run")
    parser.add_argument("--seconds", type=float, default=20, help="of each load run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--saturation", type=float, nargs="*", default=[600, 1200], help="further rates, 10 s each"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        registry, built = args.registry, {}
        if registry is None:
            built = build_registry(Path(tmp), args)
            registry = Path(tmp) / "models"
        result = run(registry, built, args)
    result["failures"] = failures(result, args.expect_provider)
    args.output.write_text(json.dumps(with_provenance(result), indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "load"}, indent=2))
    for name, load in result["load"].items():
        if "failed" in load:
            continue
        sustained = {k: load["sustained"][k] for k in ("rate", "p50_ms", "p99_ms", "errors")}
        print(f"load {name}: {sustained}, within SLO up to {load['saturation_rate_within_slo']} req/s")
    if "load_skipped" in result:
        print(f"load runs skipped: {result['load_skipped']}")
    for line in result["failures"]:
        print(f"FAILED: {line}")
    print(f"GPU serving check {'FAILED' if result['failures'] else 'passed'}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
