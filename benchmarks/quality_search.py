"""Quality search for the ALS defaults against the item-kNN and most-popular baselines.

Every run uses the playlist-continuation protocol of ``recsys.evaluation.protocol``
(``prepare`` + ``score``), so the numbers are the ones ``recsys`` itself reports.
Three subcommands, each printing a markdown table (and optionally writing JSON lines, each
row with the run's provenance under ``provenance``):

``knn``
    Item-kNN (BM25) grid over neighbours and (K1, B), to pick the strongest baseline.
``als``
    ALS grid: the cartesian product of ``--grid name=v1,v2,...`` lists over
    :class:`recsys.models.als.ALSParams` fields (unset fields keep ``--base``'s or the
    library defaults).
``final``
    Most-popular, one item-kNN config, one ALS config (and optionally score blends of
    ALS with item-kNN) on several split seeds, with per-seed rows and means.

Examples (from the repository root)::

    YES=/work/shared/data/yes_small
    AOTM=/work/shared/data/aotm2011_mcfee_segments/aotm2011_mcfee_segments_fold0.tsv
    .venv/bin/python benchmarks/quality_search.py knn --data $YES $AOTM \\
        --neighbours 50,100,200,500 --bm25 1.2:0.75,100:0.8,3:0.5
    .venv/bin/python benchmarks/quality_search.py als --data $YES $AOTM \\
        --grid factors=64,128 regularization=0.05,1 alpha=5,20
    # the numbers reported for the tuned defaults (about 3 minutes on 2 cores):
    .venv/bin/python benchmarks/quality_search.py final --data $YES $AOTM --seeds 0 1 2 \\
        --knn 500:3:0.5 --als factors=256 iterations=30 regularization=200 alpha=6 \\
        weighting=bm25 bm25_b=0 --blend 0.7
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from provenance import provenance, with_provenance  # benchmarks/provenance.py
from threadpoolctl import threadpool_limits

from recsys.data.formats import load
from recsys.evaluation.metrics import NDCG_K, ranking_metrics
from recsys.evaluation.protocol import PreparedSplit, prepare, score
from recsys.models.als import ALSModel, ALSParams
from recsys.models.baselines import ItemKNN, MostPopular
from recsys.models.device import Device

SHOWN = ("r_precision", "ndcg@500", "recall@50", "hr@10", "clicks", "coverage@10")
BLEND_CHUNK = 512
"""Test playlists scored at once in a blend (bounds the dense score block's memory)."""


# --------------------------------------------------------------------------- data


@dataclass
class Split:
    """One data set on one split seed."""

    name: str
    seed: int
    prepared: PreparedSplit


def data_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def splits(paths: list[Path], seeds: list[int]) -> Iterator[Split]:
    """Load each data set once and yield its prepared splits."""
    for path in paths:
        data = load(path)
        for seed in seeds:
            yield Split(data_name(path), seed, prepare(data, seed=seed))


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class KnnConfig:
    neighbours: int
    k1: float
    b: float

    @classmethod
    def parse(cls, text: str) -> KnnConfig:
        """``K:K1:B``, e.g. ``200:1.2:0.75``."""
        k, k1, b = text.split(":")
        return cls(int(k), float(k1), float(b))

    def label(self) -> str:
        return f"K={self.neighbours} K1={self.k1:g} B={self.b:g}"

    def build(self) -> ItemKNN:
        return ItemKNN(neighbours=self.neighbours, k1=self.k1, b=self.b)


def als_label(params: ALSParams, base: ALSParams) -> str:
    """Only the fields that differ from ``base`` (plus the always-relevant ones)."""
    always = ("factors", "regularization", "alpha", "iterations", "weighting")
    shown = []
    for name, value in params.model_dump().items():
        if name == "seed":
            continue
        if name in always or value != getattr(base, name):
            if name in ("bm25_k1", "bm25_b") and params.weighting == "linear":
                continue
            shown.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(shown)


class Blend:
    """Score blend ``(1 - w) * ALS + w * item-kNN``, each row max-normalised first.

    Uses already fitted models; kNN scores are the visible playlist times the item
    similarity matrix that implicit's BM25Recommender learned (what it ranks by).
    """

    name = "blend"

    def __init__(self, als: ALSModel, knn: ItemKNN, weight: float) -> None:
        self.als, self.knn, self.weight = als, knn, weight

    def fit(self, matrix: sp.csr_matrix) -> None:  # models arrive fitted
        pass

    def recommend(self, rows: np.ndarray, matrix: sp.csr_matrix, k: int) -> np.ndarray:
        assert self.als.user_factors is not None and self.als.item_factors is not None
        similarity = self.knn._model.similarity  # fitted BM25 item-item matrix
        out = np.full((len(rows), k), -1, dtype=np.int64)
        for start in range(0, len(rows), BLEND_CHUNK):
            chunk = rows[start : start + BLEND_CHUNK]
            visible = matrix[chunk]
            positive = visible.multiply(visible > 0).tocsr()
            with threadpool_limits(1, "blas"):
                als = self.als.user_factors[chunk] @ self.als.item_factors.T
            knn = np.asarray((positive @ similarity).todense(), dtype=np.float32)
            blended = (1.0 - self.weight) * _row_max_normalise(als)
            blended += self.weight * _row_max_normalise(knn)
            blended[visible.nonzero()] = -np.inf
            top = np.argpartition(-blended, k, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(blended, top, axis=1), axis=1)
            out[start : start + len(chunk)] = np.take_along_axis(top, order, axis=1)
        return out


def _row_max_normalise(scores: np.ndarray) -> np.ndarray:
    peak = np.abs(scores).max(axis=1, keepdims=True)
    return scores / np.where(peak > 0, peak, 1.0)


# --------------------------------------------------------------------------- running


@dataclass
class Result:
    data: str
    seed: int
    method: str
    config: str
    metrics: dict[str, float]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "seed": self.seed,
            "method": self.method,
            "config": self.config,
            "seconds": round(self.seconds, 3),
            **self.metrics,
        }


def run(model: Any, split: Split, method: str, config: str) -> Result:
    start = time.perf_counter()
    model.fit(split.prepared.train)
    metrics = score(model, split.prepared)
    return Result(split.name, split.seed, method, config, metrics, time.perf_counter() - start)


def run_blend(als: ALSModel, knn: ItemKNN, weight: float, split: Split, config: str) -> Result:
    """Score an ALS + kNN blend from already fitted models (seconds = blend scoring only)."""
    start = time.perf_counter()
    prepared = split.prepared
    recs = Blend(als, knn, weight).recommend(prepared.split.test_rows, prepared.train, NDCG_K)
    metrics = ranking_metrics(
        recs,
        hidden_indptr=prepared.split.hidden_indptr,
        hidden_items=prepared.split.hidden_items,
        n_items=prepared.train.shape[1],
        item_popularity=prepared.popularity,
    )
    return Result(split.name, split.seed, f"blend w={weight:g}", config, metrics, time.perf_counter() - start)


# --------------------------------------------------------------------------- grids


def parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_assignments(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["factors=64,128", "alpha=5"]`` -> ``{"factors": [64, 128], "alpha": [5]}``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, _, values = item.partition("=")
        if name not in ALSParams.model_fields:
            raise SystemExit(f"unknown ALSParams field {name!r}")
        grid[name] = [parse_value(v) for v in values.split(",")]
    return grid


def expand(base: dict[str, Any], grid: dict[str, list[Any]]) -> list[ALSParams]:
    names = list(grid)
    return [
        ALSParams(**{**base, **dict(zip(names, values, strict=True))})
        for values in itertools.product(*(grid[n] for n in names))
    ]


# --------------------------------------------------------------------------- output


def fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def table(results: list[Result], *, with_seed: bool = True) -> str:
    head = ["data", "method", "config", *(["seed"] if with_seed else []), *SHOWN, "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.data, r.method, r.config, *([str(r.seed)] if with_seed else [])]
        cells += [fmt(r.metrics[m]) for m in SHOWN] + [f"{r.seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def with_means(results: list[Result]) -> list[Result]:
    """Per-seed rows, each (data, method, config) group followed by its mean row."""
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.data, r.method, r.config), []).append(r)
    out: list[Result] = []
    for (data, method, config), rows in groups.items():
        out.extend(rows)
        if len(rows) > 1:
            mean = {m: float(np.mean([r.metrics[m] for r in rows])) for m in rows[0].metrics}
            secs = float(np.mean([r.seconds for r in rows]))
            out.append(Result(data, -1, method, config, mean, secs))
    return out


def emit(results: list[Result], json_path: Path | None, *, title: str) -> None:
    rows = with_means(results)
    text = table(rows).replace("| -1 |", "| mean |")
    print(f"\n### {title}\n\n{text}\n", flush=True)
    if json_path is not None:
        record = provenance()
        with json_path.open("a") as fh:
            for r in rows:
                fh.write(json.dumps(with_provenance(r.as_dict(), record)) + "\n")


def progress(result: Result) -> None:
    m = result.metrics
    print(
        f"  {result.data} seed {result.seed} {result.method} [{result.config}]: "
        f"R-prec {m['r_precision']:.4f} NDCG {m['ndcg@500']:.4f} "
        f"recall@50 {m['recall@50']:.4f} ({result.seconds:.1f}s)",
        file=sys.stderr,
        flush=True,
    )


# --------------------------------------------------------------------------- commands


def cmd_knn(args: argparse.Namespace) -> list[Result]:
    configs = [
        KnnConfig(k, *map(float, pair.split(":")))
        for k in (int(v) for v in args.neighbours.split(","))
        for pair in args.bm25.split(",")
    ]
    results = []
    for split in splits(args.data, args.seeds):
        for config in configs:
            results.append(run(config.build(), split, "item_knn", config.label()))
            progress(results[-1])
    return results


def cmd_als(args: argparse.Namespace) -> list[Result]:
    base = ALSParams(**{k: v[0] for k, v in parse_assignments(args.base).items()})
    grid = expand(base.model_dump(), parse_assignments(args.grid))
    print(f"{len(grid)} ALS configs x {len(args.data) * len(args.seeds)} splits", file=sys.stderr)
    results = []
    for split in splits(args.data, args.seeds):
        for params in grid:
            model = ALSModel(params, device=Device.CPU)
            results.append(run(model, split, "als", als_label(params, ALSParams())))
            progress(results[-1])
    return results


def cmd_final(args: argparse.Namespace) -> list[Result]:
    params = ALSParams(**{k: v[0] for k, v in parse_assignments(args.als).items()})
    knn_config = KnnConfig.parse(args.knn)
    weights = [float(w) for w in args.blend.split(",")] if args.blend else []
    label = als_label(params, ALSParams())
    results = []
    for split in splits(args.data, args.seeds):
        results.append(run(MostPopular(), split, "most_popular", "-"))
        knn = knn_config.build()
        results.append(run(knn, split, "item_knn", knn_config.label()))
        als = ALSModel(params, device=Device.CPU)
        results.append(run(als, split, "als", label))
        for weight in weights:
            results.append(run_blend(als, knn, weight, split, f"ALS + {knn_config.label()}"))
        for r in results[-(3 + len(weights)) :]:
            progress(r)
    # group rows by data set and method for the table
    order = {"most_popular": 0, "item_knn": 1, "als": 2}
    results.sort(key=lambda r: (r.data, order.get(r.method, 3), r.method, r.seed))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data", type=Path, nargs="+", required=True, help="data sets (any format load() reads)"
    )
    common.add_argument("--seeds", type=int, nargs="+", default=[0], help="split seeds")
    common.add_argument("--json", type=Path, help="append result rows as JSON lines to this file")

    knn = sub.add_parser("knn", parents=[common], help="item-kNN baseline grid")
    knn.add_argument("--neighbours", default="50,100,200,500", help="comma-separated K values")
    knn.add_argument("--bm25", default="1.2:0.75,100:0.8,3:0.5", help="comma-separated K1:B pairs")

    als = sub.add_parser("als", parents=[common], help="ALS grid (cartesian product)")
    als.add_argument("--grid", nargs="+", default=[], metavar="FIELD=V1,V2", help="ALSParams lists")
    als.add_argument("--base", nargs="*", default=[], metavar="FIELD=V", help="fixed ALSParams values")

    final = sub.add_parser("final", parents=[common], help="baselines vs one ALS config over seeds")
    final.add_argument("--knn", default="200:1.2:0.75", help="item-kNN config K:K1:B")
    final.add_argument("--als", nargs="*", default=[], metavar="FIELD=V", help="ALSParams values")
    final.add_argument("--blend", default="", help="comma-separated kNN weights for ALS+kNN blends")

    args = parser.parse_args(argv)
    start = time.perf_counter()
    command = {"knn": cmd_knn, "als": cmd_als, "final": cmd_final}[args.command]
    results = command(args)
    emit(results, args.json, title=f"{args.command} ({time.perf_counter() - start:.0f}s wall)")


if __name__ == "__main__":
    main()
