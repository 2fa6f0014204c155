"""The GPU solver agrees with the CPU solver (runs where implicit's CUDA build finds a GPU)."""

from __future__ import annotations

import pytest

from recsys.data.interaction_table import Interactions
from recsys.evaluation.protocol import prepare, score
from recsys.models.als import ALSModel, ALSParams
from recsys.models.device import Device, gpu_available

HAS_GPU, WHY_NOT = gpu_available()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason=f"no usable GPU: {WHY_NOT}")
def test_gpu_and_cpu_models_rank_alike(synth_data: Interactions) -> None:
    prepared = prepare(synth_data, seed=0)
    params = ALSParams(factors=32, iterations=10, seed=0)
    results = {}
    for device in (Device.CPU, Device.GPU):
        model = ALSModel(params, device=device)
        model.fit(prepared.train)
        assert model.report is not None and model.report.device is device
        results[device] = score(model, prepared)["ndcg@500"]
    assert results[Device.GPU] >= 0.9 * results[Device.CPU]
