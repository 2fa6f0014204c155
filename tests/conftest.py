"""Shared fixtures: small generated data sets and a trained model in a temporary registry."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import onnxruntime as ort
import pytest

from recsys.data.formats import DataFormat, load, write_synth
from recsys.data.interaction_table import Interactions
from recsys.data.synth import SynthSpec, generate
from recsys.experiments.analysis import ArmMetrics
from recsys.experiments.arms import apply_decision
from recsys.experiments.controller import decide
from recsys.models.als import ALSParams
from recsys.models.device import Device, gpu_available
from recsys.registry.plan import Experiment
from recsys.registry.store import FileRegistry
from recsys.scoring.topk import CUDA_PROVIDER
from training.pipeline import TrainRequest, TrainResult, train

SMALL = SynthSpec(playlists=400, tracks=2_000, seed=7)
FAST_PARAMS = ALSParams(factors=16, iterations=4, seed=0, knn_weight=0.0)
"""Plain ALS, small and quick: recommendations can be checked against numpy exactly."""
BLEND_PARAMS = ALSParams(factors=16, iterations=4, seed=0, knn_weight=0.7, knn_neighbours=50)
CUDA_READY = CUDA_PROVIDER in ort.get_available_providers() and gpu_available()[0]
"""onnxruntime-gpu is installed and a GPU is visible: scoring can run on the CUDA provider."""


@pytest.fixture(scope="session")
def synth_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "synth.parquet"
    write_synth(generate(SMALL), path, fmt=DataFormat.PARQUET)
    return path


@pytest.fixture(scope="session")
def synth_data(synth_parquet: Path) -> Interactions:
    return load(synth_parquet)


@pytest.fixture(scope="session")
def trained(
    tmp_path_factory: pytest.TempPathFactory, synth_parquet: Path
) -> tuple[FileRegistry, TrainResult]:
    """One model version (2.1) trained on the small synthetic set, made production (forced: tiny model)."""
    registry = FileRegistry(tmp_path_factory.mktemp("registry"))
    result = train(TrainRequest(data=synth_parquet, params=FAST_PARAMS, device=Device.CPU), registry)
    registry.promote(result.manifest.version, force=True)
    return registry, result


@pytest.fixture(scope="session")
def trained_blend(
    tmp_path_factory: pytest.TempPathFactory, synth_parquet: Path
) -> tuple[FileRegistry, TrainResult]:
    """A version of the ALS + item-kNN blend (the default model shape)."""
    registry = FileRegistry(tmp_path_factory.mktemp("registry-blend"))
    return registry, train(TrainRequest(data=synth_parquet, params=BLEND_PARAMS, device=Device.CPU), registry)


@pytest.fixture
def registry(tmp_path: Path) -> FileRegistry:
    return FileRegistry(tmp_path / "models")


def arm_numbers(users: int, listen: float, *, hates: float = 0.01) -> ArmMetrics:
    """An arm's metrics as the stream worker's counters would give them."""
    return ArmMetrics(
        users=users,
        listen_s_per_user=listen,
        listen_s_variance=300.0**2,
        plays_per_user=4.0,
        love_rate=0.05,
        hate_rate=hates,
        skip_rate=0.2,
        hate_rate_variance=hates * (1 - hates) / 4.0,
        skip_rate_variance=0.2 * 0.8 / 4.0,
    )


@pytest.fixture
def experiment_registry(tmp_path: Path, synth_parquet: Path) -> FileRegistry:
    """2.1 in production, 2.2 in experiment ``v2.2`` after three controller decisions
    (hold at 1%, advance to 2%, advance to 5%), each with its numbers in the audit log."""
    registry = FileRegistry(tmp_path / "models")
    for _ in range(2):
        train(TrainRequest(data=synth_parquet, params=FAST_PARAMS, device=Device.CPU), registry)
    registry.promote("2.1", force=True)
    registry.set_experiment(Experiment(name="v2.2", treatment="2.2", share=0.01))
    for users, listen in ((20, 640.0), (300, 650.0), (900, 655.0)):
        experiment = registry.rollout().experiments[0]
        arms = {"treatment": arm_numbers(users, listen), "control": arm_numbers(users, 600.0)}
        decision = decide(
            experiment=experiment,
            treatment=arms["treatment"],
            control=arms["control"],
            step_age=timedelta(hours=2),
        )
        apply_decision(registry, experiment, decision, arms)
    return registry
