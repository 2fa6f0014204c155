"""The scoring graph on onnxruntime's CUDA provider: provider in use, exactness, latency.

For each catalog size, one run on one machine: which provider ``OnnxScorer(prefer_gpu=True)``
ends up with (through the project's own library preload, not torch's), where onnxruntime
placed each node (from its profiler), whether the GPU's top-k equals numpy's, and the
scoring latency for one playlist and for a batch of 64: the CUDA provider (float32 scan),
the CPU provider (int8 scan, what a CPU server runs) and, with ``--cuda-int8``, the CUDA
provider on the stored int8 graph.
Exits non-zero when the CUDA provider is not in use or its top-k differs from numpy's.

    python benchmarks/gpu/check_scoring.py --items 200000 2000000 --output scoring.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from recsys.registry.artifacts import ITEM_FACTORS, SCORING
from recsys.scoring.onnx_graph import export_scoring_graph
from recsys.scoring.topk import CUDA_PROVIDER, EXTERNAL_DATA_FOLDER, OnnxScorer, graph_source, numpy_topk

K = 20


def with_provenance(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the commit, date, machine and package versions of this run first.

    The record comes from ``benchmarks/provenance.py``, found from this file's location.
    """
    benchmarks = str(Path(__file__).resolve().parents[1])
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)
    record: dict[str, Any] = importlib.import_module("provenance").with_provenance(result)
    return record


def catalog(folder: Path, n_items: int, factors: int) -> np.ndarray:
    rng = np.random.default_rng(n_items)
    items = (rng.standard_normal((n_items, factors)) * 0.1).astype(np.float32)
    np.save(folder / ITEM_FACTORS, items)
    export_scoring_graph(folder / SCORING, folder / ITEM_FACTORS, n_items=n_items, factors=factors)
    return items


def latency_ms(scorer: OnnxScorer, users: np.ndarray, excluded: np.ndarray, repeat: int) -> dict[str, float]:
    for _ in range(5):
        scorer.topk(users, excluded, K)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        scorer.topk(users, excluded, K)
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def placement(graph: Path, users: np.ndarray, excluded: np.ndarray) -> dict[str, str]:
    """Operator type -> the providers onnxruntime ran its nodes on, from a profiled session."""
    import onnxruntime as ort

    scorer = OnnxScorer(graph, prefer_gpu=True)
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3
    options.add_session_config_entry(EXTERNAL_DATA_FOLDER, str(graph.parent))
    source = graph_source(graph, scorer.scan)
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        scorer._session = ort.InferenceSession(source, options, providers=[CUDA_PROVIDER])
        for _ in range(3):
            scorer.topk(users, excluded, K)
        events = json.loads(Path(scorer._session.end_profiling()).read_text())
    seen: dict[str, Counter[str]] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "op_name" in args and "provider" in args:
            seen.setdefault(args["op_name"], Counter())[args["provider"]] += 1
    return {op: ", ".join(sorted(providers)) for op, providers in sorted(seen.items())}


def check(n_items: int, factors: int, repeat: int, cuda_int8: bool) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        items = catalog(folder, n_items, factors)
        graph = folder / SCORING
        batch = items[rng.integers(0, n_items, (64, 20))].mean(axis=1) * 3
        excluded = rng.integers(0, n_items, (64, 20)).astype(np.int64)
        gpu, cpu = OnnxScorer(graph, prefer_gpu=True), OnnxScorer(graph)
        result: dict[str, Any] = {"items": n_items, "factors": factors, "provider": gpu.provider}
        result["scan"] = {"cuda": gpu.scan, "cpu": cpu.scan}
        reference = numpy_topk(batch, items, excluded, K).indices
        result["topk_equals_numpy"] = bool(np.array_equal(gpu.topk(batch, excluded, K).indices, reference))
        result["rows_rescored_in_numpy"] = gpu.rescored
        if gpu.provider == CUDA_PROVIDER:
            result["node_providers"] = placement(graph, batch, excluded)
        scorers = [("cuda", gpu), ("cpu", cpu)]
        if cuda_int8:
            scorers.append(("cuda_int8", OnnxScorer(graph, prefer_gpu=True, scan="int8")))
        for name, scorer in scorers:
            result[name] = {
                "one_playlist": latency_ms(scorer, batch[:1], excluded[:1], repeat),
                "batch_64": latency_ms(scorer, batch, excluded, max(repeat // 10, 10)),
            }
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--cuda-int8", action="store_true", help="also time the int8 graph on CUDA")
    parser.add_argument("--output", type=Path, default=Path("gpu-scoring.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import onnxruntime as ort

    results: dict[str, Any] = {"onnxruntime": ort.__version__, "available": ort.get_available_providers()}
    results["catalogs"] = []
    for n_items in args.items:
        results["catalogs"].append(check(n_items, args.factors, args.repeat, args.cuda_int8))
        print(json.dumps(results["catalogs"][-1], indent=2), flush=True)
    args.output.write_text(json.dumps(with_provenance(results), indent=2))
    good = all(c["provider"] == CUDA_PROVIDER and c["topk_equals_numpy"] for c in results["catalogs"])
    print(f"GPU scoring check {'passed' if good else 'FAILED'}")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
