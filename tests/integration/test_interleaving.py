"""Interleaving for real: API, broker, stream worker, simulated listeners and the rollout
controller. Listeners in an interleaving experiment get lists merged from a weak production
model and a better treatment; their listening is credited to the version of each track, and
the controller sends the better version on to the A/B ladder at 1%."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.kafka_launcher import LocalKafka
from recsys.access.scopes import Scope
from recsys.data.formats import DataFormat, write_synth
from recsys.data.synth import SynthSpec, generate
from recsys.experiments.interleaving import PREFERENCE
from recsys.models.als import ALSParams
from recsys.models.device import Device
from recsys.registry.plan import Experiment, ExperimentMode
from recsys.registry.store import FileRegistry
from tests.integration.test_experiment_loop import recsys
from tests.integration.test_serve_process import serve
from tests.integration.test_streams import Worker
from tests.keys import new_key
from training.pipeline import TrainRequest, train

CATALOGUE = SynthSpec(playlists=2000, tracks=10_000, seed=13)
LISTENERS = 160
MAX_ROUNDS = 4
MIN_USERS = 30
WEAK = ALSParams(factors=8, iterations=2, knn_weight=0.0)
VARIANT = "il:interleave"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> FileRegistry:
    """2.1, a weak model, in production; 2.2, the default model, to be tried."""
    folder = tmp_path_factory.mktemp("interleaving")
    write_synth(generate(CATALOGUE), folder / "data.parquet", fmt=DataFormat.PARQUET)
    registry = FileRegistry(folder / "models")
    for params in (WEAK, ALSParams()):
        train(
            TrainRequest(data=folder / "data.parquet", params=params, device=Device.CPU, evaluate=False),
            registry,
        )
    registry.promote("2.1", force=True)
    return registry


@pytest.fixture
def worker(kafka: LocalKafka, tmp_path: Path, registry: FileRegistry) -> Iterator[Worker]:
    running = Worker(kafka, tmp_path, registry.root)
    running.start()
    yield running
    running.stop()


def listen_round(api: str, key: str, worker: Worker, seed: int, out: Path) -> dict[str, Any]:
    """Simulated listeners use the API (with ``key``) and post feedback with each item's version;
    returns once the worker has counted every event of the interleaved lists."""
    recsys(
        "simulate", "--api", api, "--api-key", key, "--users", str(LISTENERS), "--seed", str(seed),
        "--playlists", str(CATALOGUE.playlists), "--tracks", str(CATALOGUE.tracks),
        "--data-seed", str(CATALOGUE.seed), "--output", str(out),
    )  # fmt: skip
    summary: dict[str, Any] = json.loads(out.read_text())
    sent = sum(arm["events"] for key, arm in summary["arms"].items() if key.endswith(f"|{VARIANT}"))
    deadline = time.monotonic() + 60
    while sum(c["events"] for k, c in worker.stats().items() if k.endswith(f"|{VARIANT}")) < sent:
        assert time.monotonic() < deadline, "the worker did not count the round"
        time.sleep(0.3)
    return summary


def advance(worker: Worker, registry: FileRegistry) -> str:
    """``recsys rollout advance`` on the experiment, as the controller runs it."""
    stats = f"http://127.0.0.1:{worker.port}/stats/"
    return recsys(
        "rollout", "advance", "il", "--stats", stats, "--min-users", str(MIN_USERS),
        "--min-step-s", "0", "--registry", str(registry.root),
    )  # fmt: skip


def test_a_preferred_treatment_goes_on_to_ab_at_one_percent(
    kafka: LocalKafka, registry: FileRegistry, worker: Worker, tmp_path: Path
) -> None:
    registry.set_experiment(Experiment(name="il", treatment="2.2", share=0.5, mode=ExperimentMode.INTERLEAVE))
    server = serve(registry, feedback_sink=f"kafka://{kafka.bootstrap}", kafka_bootstrap=kafka.bootstrap)
    api = next(server)
    key = new_key(registry.root, Scope.RECOMMEND, Scope.FEEDBACK)
    outputs = []
    try:
        for round_ in range(MAX_ROUNDS):
            summary = listen_round(api, key, worker, 300 + round_, tmp_path / f"{round_}.json")
            assert f"2.1|{VARIANT}" in summary["arms"] and "2.1|control" in summary["arms"]
            outputs.append(advance(worker, registry))
            if registry.rollout().experiments[0].mode == ExperimentMode.AB:
                break
    finally:
        server.close()
    stats = worker.stats()
    # both versions' tracks were heard in the merged lists, each credited to its own arm
    assert stats[f"2.2|{VARIANT}"]["plays"] > 0 and stats[f"2.1|{VARIANT}"]["plays"] > 0
    listen = {
        v: stats[f"{v}|{VARIANT}"]["listen_ms"] / stats[f"{v}|{VARIANT}"]["plays"] for v in ("2.1", "2.2")
    }
    assert listen["2.2"] > 1.2 * listen["2.1"]
    credited = sum(stats[f"{v}|{VARIANT}"].get("credited_users", 0) for v in ("2.1", "2.2"))
    assert MIN_USERS <= credited <= LISTENERS * len(outputs)
    [experiment] = registry.rollout().experiments
    assert (experiment.mode, experiment.share, experiment.treatment) == (ExperimentMode.AB, 0.01, "2.2")
    assert "advance" in outputs[-1] and "users prefer the treatment" in outputs[-1]
    assert all("rollback" not in out for out in outputs)
    decision = registry.decisions("il")[-1]
    [preferred] = [check for check in decision.checks if check["metric"] == PREFERENCE]
    assert decision.action == "advance" and decision.share == 0.01 and float(preferred["low"] or 0) > 0
