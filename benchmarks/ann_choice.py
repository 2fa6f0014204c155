"""Which approximate index for large catalogues: usearch or faiss HNSW, by recall and latency.

Builds an inner-product HNSW index over a registered version's item factors (or the
first ``--max-items`` of them) with each library (same graph degree and build effort),
then answers the same queries, one at a time on one thread, at several search efforts.
Queries are trained playlist vectors; the truth is the exact float32 top-20. Reports build
time, index size, median and p99 latency and recall@20 against exact. usearch is not a
dependency of the project: ``pip install usearch`` to run this.

    python benchmarks/ann_choice.py --registry bench-out/serve-2m --queries 500
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from report import emit  # benchmarks/report.py, next to this script

from recsys.registry.store import FileRegistry

K = 20
DEGREE, BUILD_EFFORT = 16, 128
EFFORTS = (32, 64, 128, 256)


def exact_topk(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), 64):
        scores = queries[start : start + 64] @ items.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        out[start : start + 64] = part
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def timed_queries(search: Any, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    found, times = [], []
    for q in queries:
        start = time.perf_counter()
        found.append(search(q))
        times.append(time.perf_counter() - start)
    return np.array(found), times


def summary(times: list[float], found: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {
        "recall_at_20": round(recall(found, truth), 4),
        "p50_ms": round(float(np.median(times)) * 1e3, 3),
        "p99_ms": round(float(np.percentile(times, 99)) * 1e3, 3),
    }


def try_usearch(items: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    from usearch.index import Index

    index = Index(
        ndim=items.shape[1], metric="ip", dtype="f32", connectivity=DEGREE, expansion_add=BUILD_EFFORT
    )
    start = time.perf_counter()
    index.add(np.arange(len(items)), items, threads=2)
    report: dict[str, Any] = {"build_s": round(time.perf_counter() - start, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        index.save(str(Path(tmp) / "index.usearch"))
        report["size_mb"] = round((Path(tmp) / "index.usearch").stat().st_size / 2**20, 1)
    for effort in EFFORTS:
        index.expansion_search = effort
        found, times = timed_queries(lambda q: index.search(q, K, threads=1).keys, queries)
        report[f"effort_{effort}"] = summary(times, found, truth)
    return report


def try_faiss(items: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(2)
    index = faiss.IndexHNSWFlat(items.shape[1], DEGREE, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = BUILD_EFFORT
    start = time.perf_counter()
    index.add(items)
    report: dict[str, Any] = {"build_s": round(time.perf_counter() - start, 1)}
    report["size_mb"] = round(len(faiss.serialize_index(index)) / 2**20, 1)
    faiss.omp_set_num_threads(1)
    for effort in EFFORTS:
        index.hnsw.efSearch = effort
        found, times = timed_queries(lambda q: index.search(q[None, :], K)[1][0], queries)
        report[f"effort_{effort}"] = summary(times, found, truth)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--max-items", type=int, default=None, help="index only the first N tracks")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    model = FileRegistry(args.registry).load("production")
    items = np.ascontiguousarray(model.item_factors[: args.max_items], dtype=np.float32)
    rng = np.random.default_rng(0)
    queries = np.asarray(model.row_factors[rng.choice(len(model.row_ids), args.queries, replace=False)])
    truth = exact_topk(items, queries, K)
    result = {
        "catalog": len(items),
        "factors": items.shape[1],
        "queries": args.queries,
        "degree": DEGREE,
        "build_effort": BUILD_EFFORT,
        "usearch": try_usearch(items, queries, truth),
        "faiss_hnsw": try_faiss(items, queries, truth),
    }
    return emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
