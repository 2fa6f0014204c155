"""Simulated listeners against a real ``recsys serve`` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from recsys.access.scopes import Scope
from recsys.data.formats import DataFormat, write_synth
from recsys.data.listeners import TasteModel
from recsys.data.synth import SynthSpec, generate
from recsys.models.device import Device
from recsys.registry.store import FileRegistry
from tests.integration.test_serve_process import serve
from tests.keys import new_key
from training.pipeline import TrainRequest, train

USERS, K = 40, 10


CATALOGUE = SynthSpec(playlists=3000, tracks=20_000, seed=11)
"""Enough playlists per latent style for the default model to learn the styles."""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> FileRegistry:
    folder = tmp_path_factory.mktemp("simulated")
    write_synth(generate(CATALOGUE), folder / "data.parquet", fmt=DataFormat.PARQUET)
    registry = FileRegistry(folder / "models")
    result = train(TrainRequest(data=folder / "data.parquet", device=Device.CPU, evaluate=False), registry)
    registry.promote(result.manifest.version, force=True)
    return registry


@pytest.fixture
def api(registry: FileRegistry) -> Iterator[str]:
    yield from serve(registry, feedback_sink="memory://")


def test_simulated_listeners_listen_longer_to_the_model_than_to_random_tracks(
    api: str, registry: FileRegistry, tmp_path: Path
) -> None:
    out = tmp_path / "summary.json"
    args = [
        "--users",
        str(USERS),
        "--k",
        str(K),
        "--playlists",
        str(CATALOGUE.playlists),
        "--tracks",
        str(CATALOGUE.tracks),
    ]
    key = new_key(registry.root, Scope.RECOMMEND, Scope.FEEDBACK)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys",
            "simulate",
            "--api",
            api,
            "--data-seed",
            str(CATALOGUE.seed),
            *args,
            "--output",
            str(out),
        ],
        env=os.environ | {"RECSYS_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    [(arm, numbers)] = summary["arms"].items()
    assert arm == "2.1|control" and numbers["requests"] == USERS and summary["feedback_refused"] == 0
    assert numbers["events"] >= USERS * K  # one event per track, more for loves and hates
    model = TasteModel(generate(CATALOGUE))
    rng = np.random.default_rng(1)
    listeners = model.listeners(200, seed=99)
    random_ms = np.mean(
        [
            model.listen(u, model.track_ids[rng.integers(len(model.track_ids))], rng).listen_ms
            for u in listeners
        ]
    )
    assert numbers["listen_s_per_request"] > 2 * K * random_ms / 1000
