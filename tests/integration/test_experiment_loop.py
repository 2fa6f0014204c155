"""A deliberately bad model in the real loop: API, broker, stream worker, simulated
listeners and the rollout controller; it is rolled back at its first step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from recsys.data.formats import DataFormat, write_synth
from recsys.data.synth import SynthSpec, generate
from recsys.models.device import Device
from recsys.registry import FileRegistry
from recsys.rollout import Experiment
from streams.broker import LocalKafka
from tests.integration.test_serve_process import serve
from tests.integration.test_streams import Worker
from training.pipeline import TrainRequest, train

CATALOGUE = SynthSpec(playlists=2000, tracks=10_000, seed=13)
LISTENERS = 400


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> FileRegistry:
    """2.1 trained on the catalogue, in production; 2.2 trained on the same playlists with
    every track id swapped for another at random (it knows nothing about the real tracks)."""
    folder = tmp_path_factory.mktemp("bad-model")
    data = generate(CATALOGUE)
    write_synth(data, folder / "data.parquet", fmt=DataFormat.PARQUET)
    data.tracks = np.random.default_rng(0).permutation(data.n_tracks).astype(np.int32)[data.tracks]
    write_synth(data, folder / "scrambled.parquet", fmt=DataFormat.PARQUET)
    registry = FileRegistry(folder / "models")
    for name in ("data", "scrambled"):
        train(TrainRequest(data=folder / f"{name}.parquet", device=Device.CPU, evaluate=False), registry)
    registry.promote("2.1", force=True)
    return registry


@pytest.fixture
def worker(kafka: LocalKafka, tmp_path: Path, registry: FileRegistry) -> Iterator[Worker]:
    running = Worker(kafka, tmp_path, registry.root)
    running.start()
    yield running
    running.stop()


def recsys(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")} | {"COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "recsys", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_a_bad_model_is_rolled_back_at_its_first_step(
    kafka: LocalKafka, registry: FileRegistry, worker: Worker, tmp_path: Path
) -> None:
    registry.set_experiment(Experiment(name="scrambled", treatment="2.2", share=0.01))
    server = serve(registry, feedback_sink=f"kafka://{kafka.bootstrap}")
    api = next(server)
    try:
        recsys(
            "simulate", "--api", api, "--users", str(LISTENERS), "--seed", "1",
            "--playlists", str(CATALOGUE.playlists), "--tracks", str(CATALOGUE.tracks),
            "--data-seed", str(CATALOGUE.seed), "--output", str(tmp_path / "round.json"),
        )  # fmt: skip
        served = json.loads((tmp_path / "round.json").read_text())["arms"]
        arms = {key: arm["events"] for key, arm in served.items() if "scrambled:" in key}
        assert len(arms) == 2  # both arms of the experiment got listeners
        deadline = time.monotonic() + 60
        while any(worker.stats().get(key, {}).get("events", 0) < n for key, n in arms.items()):
            assert time.monotonic() < deadline, "the worker did not count the round"
            time.sleep(0.5)
        out = recsys(
            "rollout", "advance", "scrambled", "--stats", f"http://127.0.0.1:{worker.port}/stats/",
            "--metrics", f"{api}/metrics", "--min-users", "30", "--min-step-s", "0",
            "--registry", str(registry.root),
        )  # fmt: skip
    finally:
        server.close()
    assert "rollback" in out and "hate rate up" in out
    assert registry.rollout().experiments == [] and registry.production() == "2.1"
    decision = registry.state()["log"][-1]
    assert decision["action"] == "rollout scrambled: rollback"
    treated = decision["detail"]["treatment_users"]
    assert 2 <= treated <= 0.02 * LISTENERS  # seen by no more than 2% of the listeners
    assert decision["detail"]["treatment_requests"] >= treated  # the serving guardrail was read
