"""GPU path end to end: train ALS with implicit's CUDA solver and its CPU solver on the same data.

Reports, in one run on one machine: device picked by ``--device auto``, time per
iteration on each device, ranking quality of both (same split, same parameters),
that the GPU model exports to the same ONNX scoring graph, and which onnxruntime
provider scores it. Exits non-zero when the GPU path is missing or its quality
falls clearly below the CPU's.

    python benchmarks/gpu/check_gpu.py --scale 0.05 --output gpu.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.synth import SynthSpec, generate, to_interactions
from recsys.evaluation.protocol import prepare, score
from recsys.models.als import ALSModel, ALSParams
from recsys.models.cuda_libs import preload
from recsys.models.device import Device, gpu_available, resolve
from recsys.registry.artifacts import ITEM_FACTORS, SCORING
from recsys.scoring.onnx_graph import export_scoring_graph
from recsys.scoring.topk import OnnxScorer, numpy_topk

QUALITY_TOLERANCE = 0.9
"""The GPU model's NDCG@500 must reach at least this share of the CPU model's."""


def with_provenance(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the commit, date, machine and package versions of this run first.

    The record comes from ``benchmarks/provenance.py``, found from this file's location.
    """
    benchmarks = str(Path(__file__).resolve().parents[1])
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)
    record: dict[str, Any] = importlib.import_module("provenance").with_provenance(result)
    return record


def fit(params: ALSParams, device: Device, matrix: Any) -> tuple[ALSModel, dict[str, float]]:
    model = ALSModel(params, device=device)
    model.fit(matrix)
    assert model.report is not None
    times = model.report.iteration_seconds
    return model, {"fit_s": model.report.fit_seconds, "iteration_s_median": float(np.median(times))}


def onnx_check(model: ALSModel) -> dict[str, Any]:
    assert model.item_factors is not None and model.user_factors is not None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / ITEM_FACTORS, model.item_factors)
        n, f = model.item_factors.shape
        export_scoring_graph(folder / SCORING, folder / ITEM_FACTORS, n_items=n, factors=f)
        scorer = OnnxScorer(folder / SCORING, prefer_gpu=True)
        users = model.user_factors[:64]
        excluded = np.zeros((len(users), 0), np.int64)
        same = np.array_equal(
            scorer.topk(users, excluded, 50).indices,
            numpy_topk(users, model.item_factors, excluded, 50).indices,
        )
        return {"onnx_provider": scorer.provider, "onnx_topk_equals_numpy": bool(same)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.05, help="synthetic data size (fraction of MPD)")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument(
        "--full-scale-gpu", action="store_true", help="also fit the full 66M-entry synthetic set on GPU"
    )
    parser.add_argument("--output", type=Path, default=Path("gpu-check.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    result: dict[str, Any] = {
        "python": sys.version.split()[0],
        "machine": platform.node(),
        "preloaded": preload(),
    }
    ok, reason = gpu_available()
    result["gpu_available"], result["gpu_reason"] = ok, reason
    result["auto_device"] = resolve(Device.AUTO).value
    print(json.dumps(result, indent=2), flush=True)
    if not ok:
        print(f"GPU path unavailable: {reason}", file=sys.stderr)
        args.output.write_text(json.dumps(with_provenance(result), indent=2))
        return 1

    start = time.perf_counter()
    data = to_interactions(generate(SynthSpec.at_scale(args.scale, seed=0)))
    prepared = prepare(data, seed=0)
    result["data"] = data.stats() | {"generate_and_split_s": time.perf_counter() - start}
    # the ALS solver is what differs by device: compare it without the (CPU) item-kNN blend
    params = ALSParams(factors=args.factors, iterations=args.iterations, seed=0, knn_weight=0.0)
    result["params"] = params.model_dump(mode="json")
    for device in (Device.GPU, Device.CPU):
        model, times = fit(params, device, prepared.train)
        result[device.value] = times | score(model, prepared)
        if device is Device.GPU:
            result["gpu"] |= onnx_check(model)
        print(json.dumps({device.value: result[device.value]}, indent=2), flush=True)
    result["speedup_fit"] = result["cpu"]["fit_s"] / result["gpu"]["fit_s"]
    result["ndcg_ratio_gpu_over_cpu"] = result["gpu"]["ndcg@500"] / result["cpu"]["ndcg@500"]

    if args.full_scale_gpu:
        start = time.perf_counter()
        full = to_interactions(generate(SynthSpec.at_scale(1.0, seed=0)))
        matrix = full.to_csr()
        prep_s = time.perf_counter() - start
        _, times = fit(params, Device.GPU, matrix)
        result["gpu_full_scale"] = full.stats() | times | {"generate_and_matrix_s": prep_s}
        print(json.dumps({"gpu_full_scale": result["gpu_full_scale"]}, indent=2), flush=True)

    args.output.write_text(json.dumps(with_provenance(result), indent=2))
    good = result["ndcg_ratio_gpu_over_cpu"] >= QUALITY_TOLERANCE
    verdict = "passed" if good else "FAILED"
    ratio, speedup = result["ndcg_ratio_gpu_over_cpu"], result["speedup_fit"]
    print(f"GPU check {verdict}: NDCG ratio {ratio:.3f}, fit speedup {speedup:.1f}x")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
