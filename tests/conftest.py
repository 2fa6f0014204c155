"""Shared fixtures: small generated data sets and a trained model in a temporary registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.data.formats import DataFormat, load, write_synth
from recsys.data.synth import SynthSpec, generate
from recsys.data.table import Interactions
from recsys.models.als import ALSParams
from recsys.models.device import Device
from recsys.registry import FileRegistry
from training.pipeline import TrainRequest, TrainResult, train

SMALL = SynthSpec(playlists=400, tracks=2_000, seed=7)
FAST_PARAMS = ALSParams(factors=16, iterations=4, seed=0, knn_weight=0.0)
"""Plain ALS, small and quick: recommendations can be checked against numpy exactly."""
BLEND_PARAMS = ALSParams(factors=16, iterations=4, seed=0, knn_weight=0.7, knn_neighbours=50)


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
