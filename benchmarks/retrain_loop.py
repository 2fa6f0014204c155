"""From a retrain request to the new version serving its first share, every part in its own process.

Generates a synthetic playlist set of about ``--scale`` x the Million Playlist Dataset
(0.015: about 1M interactions), trains and promotes version 2.1 on it, then starts a local
Kafka broker, ``recsys serve`` (following ``model-events``, no registry polling) and
``recsys train --watch``. It writes ``--feedback`` listening events to the feedback log,
sends one retrain request, and polls the API as a listener who falls in the new version's
1% share until that listener is answered by 2.2. Reports the time from the request to that
answer, and the trainer's own phase timings from the new manifest.

    python benchmarks/retrain_loop.py --scale 0.015 --feedback 50000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from api_keys import authorization, new_api_key  # benchmarks/, next to this script
from environment import cli_env  # benchmarks/environment.py
from feedback_loop import start, stop, wait_http  # benchmarks/, next to this script
from kafka_io import send_all  # benchmarks/, next to this script
from report import emit

from deploy.kafka_launcher import LocalKafka, free_port
from recsys.data.formats import DataFormat, load, write_synth
from recsys.data.interaction_table import Interactions
from recsys.data.synth import SynthSpec, generate
from recsys.events.schemas import FeedbackEvent, RetrainRequest
from recsys.events.topics import FEEDBACK, RETRAIN_REQUESTS
from recsys.experiments.assignment import bucket
from recsys.models.device import Device
from recsys.registry.retrain_cut import request_id
from recsys.registry.store import FileRegistry
from streams.admin import create_topics
from training.pipeline import TrainRequest, train

NEXT = "2.2"


def base_model(folder: Path, scale: float) -> tuple[Path, FileRegistry, Interactions]:
    data = folder / "playlists.parquet"
    write_synth(generate(SynthSpec.at_scale(scale, seed=1)), data, fmt=DataFormat.PARQUET)
    registry = FileRegistry(folder / "models")
    result = train(TrainRequest(data=data, device=Device.CPU), registry)
    registry.promote(result.manifest.version, force=True)
    return data, registry, load(data)


def write_feedback(bootstrap: str, base: Interactions, n: int) -> None:
    """Listeners who each play through a playlist like those in the base data: they complete
    most tracks, skip some, love a few."""
    rng = np.random.default_rng(0)
    playlists = base.to_csr()
    messages: list[tuple[bytes | None, bytes]] = []
    sent, listener = 0, 0
    while sent < n:
        row = int(rng.integers(playlists.shape[0]))
        tracks = base.item_ids.externals(playlists.indices[playlists.indptr[row] : playlists.indptr[row + 1]])
        for track in tracks[: n - sent]:
            kind = str(rng.choice(["complete", "skip", "love"], p=[0.8, 0.15, 0.05]))
            event = FeedbackEvent.model_validate(
                {
                    "user_id": f"listener-{listener}",
                    "track_id": track,
                    "type": kind,
                    "listen_ms": {"complete": 200_000, "skip": 5_000}.get(kind),
                }
            )
            messages.append((event.user_id.encode(), event.to_bytes()))
            sent += 1
        listener += 1
    send_all(bootstrap, FEEDBACK.name, messages, linger_ms=5)


def treated_listener(experiment: str, share: float) -> str:
    return next(u for u in (f"probe-{i}" for i in range(100_000)) if bucket(u, experiment) < share)


def served_version(port: int, key: str, user: str, tracks: list[str]) -> str:
    body = json.dumps({"user_id": user, "seed_tracks": tracks[:5], "k": 10}).encode()
    headers = {"content-type": "application/json"} | authorization(key)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/recommendations", body, headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(json.loads(response.read())["model_version"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.015)
    parser.add_argument("--feedback", type=int, default=50_000)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data, registry, base = base_model(folder, args.scale)
        tracks = [str(t) for t in base.item_ids.ids.to_pylist()[:5]]
        kafka = LocalKafka(folder / "kafka", port=free_port(), controller_port=free_port())
        kafka.start()
        create_topics(kafka.bootstrap)
        api = free_port()
        env = cli_env() | {
            "RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "RECSYS_FEEDBACK_SINK": f"kafka://{kafka.bootstrap}",
            "RECSYS_MODEL_EVENTS": f"kafka://{kafka.bootstrap}",
            "RECSYS_REGISTRY": str(registry.root),
            "RECSYS_RELOAD_INTERVAL_S": "0",
            "RECSYS_TRUST__ENABLED": "false",  # its listeners' accounts are seconds old
        }
        _, key = new_api_key(registry.root, "retrain-loop")  # a temporary registry: never revoked
        processes = [
            start(["serve", "--port", str(api)], env, folder / "serve.log"),
            start(["train", "--watch", "--data", str(data), "--device", "cpu"], env, folder / "trainer.log"),
        ]
        try:
            wait_http(f"http://127.0.0.1:{api}/readyz")
            write_feedback(kafka.bootstrap, base, args.feedback)
            user = treated_listener(f"v{NEXT}", 0.01)
            assert served_version(api, key, user, tracks) == "2.1"
            request = RetrainRequest(
                request_id=request_id({}),
                production_version="2.1",
                new_events=args.feedback,
                reason="benchmark",
            )
            sent = time.perf_counter()
            send_all(kafka.bootstrap, RETRAIN_REQUESTS.name, [(None, request.to_bytes())])
            while served_version(api, key, user, tracks) != NEXT:
                trainer_log = (folder / "trainer.log").read_text(errors="replace")
                if "stays a candidate" in trainer_log or time.perf_counter() - sent > 1800:
                    raise SystemExit("2.2 does not serve:\n" + trainer_log[-3000:])
                time.sleep(0.05)
            seconds = time.perf_counter() - sent
            manifest = registry.manifest(NEXT)
            result: dict[str, Any] = {
                "cores": os.cpu_count(),
                "base_interactions": len(base),
                "feedback_events": args.feedback,
                "trained_interactions": manifest.lineage["interactions"],
                "request_to_first_share_s": round(seconds, 1),
                "trainer_phases_s": {k: round(v, 1) for k, v in manifest.timings.items()},
                "offline_metric": {v: registry.manifest(v).primary_metric("ndcg@500") for v in ("2.1", NEXT)},
                "rollout": [e.model_dump(mode="json") for e in registry.rollout().experiments],
            }
        finally:
            stop(processes)
            kafka.stop()
    return emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
