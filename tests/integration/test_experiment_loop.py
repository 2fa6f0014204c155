"""The experiment loop for real: API, broker, stream worker, simulated listeners and the
rollout controller. A better model is promoted through every step; a deliberately bad one
is rolled back at its first."""

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

from deploy.kafka_launcher import LocalKafka
from recsys.access.scopes import Scope
from recsys.data.formats import DataFormat, write_synth
from recsys.data.synth import SynthSpec, generate
from recsys.models.als import ALSParams
from recsys.models.device import Device
from recsys.registry.experiment_log import DecisionRecord
from recsys.registry.plan import Experiment
from recsys.registry.store import FileRegistry
from tests.integration.conftest import running_broker
from tests.integration.test_serve_process import serve
from tests.integration.test_streams import Worker
from tests.keys import new_key
from training.pipeline import TrainRequest, train

CATALOGUE = SynthSpec(playlists=2000, tracks=10_000, seed=13)
LISTENERS = 400
MAX_ROUNDS = 12
BAD_MODEL_ROUNDS = 8


WEAK = ALSParams(factors=8, iterations=2, knn_weight=0.0)


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of this module's own: its rounds put tens of thousands of events on the
    feedback topic, which every stream worker of the shared broker would have to replay."""
    yield from running_broker(tmp_path_factory)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> FileRegistry:
    """2.1, a weak model, in production; 2.2, the default model; 2.3, trained on the same
    playlists with every track id swapped for another at random (it knows nothing)."""
    folder = tmp_path_factory.mktemp("experiments")
    data = generate(CATALOGUE)
    write_synth(data, folder / "data.parquet", fmt=DataFormat.PARQUET)
    data.tracks = np.random.default_rng(0).permutation(data.n_tracks).astype(np.int32)[data.tracks]
    write_synth(data, folder / "scrambled.parquet", fmt=DataFormat.PARQUET)
    registry = FileRegistry(folder / "models")
    for name, params in (("data", WEAK), ("data", ALSParams()), ("scrambled", ALSParams())):
        path = folder / f"{name}.parquet"
        train(TrainRequest(data=path, params=params, device=Device.CPU, evaluate=False), registry)
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


def one_round(
    api: tuple[str, str], worker: Worker, experiment: str, seed: int, out: Path
) -> dict[str, dict[str, float]]:
    """Simulated listeners use the API (its URL and a key); returns once the worker has counted
    the experiment's events."""
    url, key = api
    recsys(
        "simulate", "--api", url, "--api-key", key, "--users", str(LISTENERS), "--seed", str(seed),
        "--playlists", str(CATALOGUE.playlists), "--tracks", str(CATALOGUE.tracks),
        "--data-seed", str(CATALOGUE.seed), "--output", str(out),
    )  # fmt: skip
    served: dict[str, dict[str, float]] = json.loads(out.read_text())["arms"]
    arms = {key: arm["events"] for key, arm in served.items() if f"{experiment}:" in key}
    deadline = time.monotonic() + 60
    while any(worker.stats().get(key, {}).get("events", 0) < n for key, n in arms.items()):
        assert time.monotonic() < deadline, "the worker did not count the round"
        time.sleep(0.5)
    return served


def advance(experiment: str, api: str, worker: Worker, registry: FileRegistry, min_users: int) -> str:
    return recsys(
        "rollout", "advance", experiment, "--stats", f"http://127.0.0.1:{worker.port}/stats/",
        "--metrics", f"{api}/metrics", "--min-users", str(min_users), "--min-step-s", "0",
        "--registry", str(registry.root),
    )  # fmt: skip


def decisions(registry: FileRegistry, experiment: str) -> list[DecisionRecord]:
    return registry.decisions(experiment)


def test_a_better_model_is_promoted_through_every_step(
    kafka: LocalKafka, registry: FileRegistry, worker: Worker, tmp_path: Path
) -> None:
    registry.set_experiment(Experiment(name="better", treatment="2.2", share=0.01))
    server = serve(registry, feedback_sink=f"kafka://{kafka.bootstrap}", kafka_bootstrap=kafka.bootstrap)
    api = next(server)
    listeners = (api, new_key(registry.root, Scope.RECOMMEND, Scope.FEEDBACK))
    rounds = []
    try:
        for round_ in range(MAX_ROUNDS):
            rounds.append(one_round(listeners, worker, "better", 100 + round_, tmp_path / f"{round_}.json"))
            advance("better", api, worker, registry, min_users=5)
            if not registry.rollout().experiments:
                break
    finally:
        server.close()
    made = [(d.action, d.share) for d in decisions(registry, "better")]
    steps = [(a, s) for a, s in made if a != "hold"]
    assert steps == [
        ("advance", 0.02),
        ("advance", 0.05),
        ("advance", 0.1),
        ("advance", 0.5),
        ("advance", 1.0),
        ("complete", 1.0),
    ]
    assert registry.production() == "2.2"
    final = decisions(registry, "better")[-1]
    assert final.sequential is not None and final.sequential.low > 0
    assert "better with confidence" in "; ".join(final.reasons)
    # simulated listening per request: before the experiment, everyone had 2.1; at the end, 2.2
    before = rounds[0]["2.1|control"]["listen_s_per_request"]
    after = rounds[-1]["2.2|better:treatment"]["listen_s_per_request"]
    assert after > 1.5 * before


def test_a_bad_model_is_rolled_back_on_evidence_within_its_first_step(
    kafka: LocalKafka, registry: FileRegistry, worker: Worker, tmp_path: Path
) -> None:
    """The step is held (too few users to end it) while listeners come round after round:
    the scrambled model is rolled back as soon as the evidence shows harm, with its interval
    and user counts recorded, and before anyone outside its 5% saw it."""
    production = registry.production()
    registry.set_experiment(Experiment(name="scrambled", treatment="2.3", share=0.05))
    server = serve(registry, feedback_sink=f"kafka://{kafka.bootstrap}", kafka_bootstrap=kafka.bootstrap)
    api = next(server)
    listeners = (api, new_key(registry.root, Scope.RECOMMEND, Scope.FEEDBACK))
    outputs = []
    try:
        for round_ in range(BAD_MODEL_ROUNDS):
            served = one_round(listeners, worker, "scrambled", 1 + round_, tmp_path / f"round{round_}.json")
            assert sum("scrambled:" in key for key in served) == 2  # both arms got listeners
            outputs.append(advance("scrambled", api, worker, registry, min_users=10**6))
            if not registry.rollout().experiments:
                break
    finally:
        server.close()
    assert "rollback" in outputs[-1] and all("rollback" not in out for out in outputs[:-1])
    assert registry.rollout().experiments == [] and registry.production() == production
    decision = registry.records().records[-1]
    assert isinstance(decision, DecisionRecord) and decision.summary == "rollout scrambled: rollback"
    breached = [check for check in decision.checks if check["breached"]]
    assert breached and all(
        check["treatment_users"] == decision.arms["treatment"]["users"] for check in breached
    )
    assert any("with confidence" in reason or "down" in reason for reason in decision.reasons)
    treated = decision.arms["treatment"]["users"]
    assert treated <= 0.08 * LISTENERS * len(outputs)  # its 5% of the listeners, and no more
    assert decision.health["treatment"].requests >= treated  # the serving guardrail was read
