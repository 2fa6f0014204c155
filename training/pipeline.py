"""The training job: load, split, fit ALS and the baselines, evaluate, export, register."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp

from recsys.data.formats import DataFormat, load
from recsys.data.interaction_files import DuplicatePolicy
from recsys.data.interaction_table import Interactions
from recsys.data.merge import with_feedback
from recsys.errors import ModelNotFound
from recsys.evaluation.baseline_cache import BaselineCache
from recsys.evaluation.protocol import EvaluationReport, evaluate_baselines, prepare, score
from recsys.evaluation.split import MAX_TEST_PLAYLISTS
from recsys.models.als import ALSModel, ALSParams, ProgressCallback
from recsys.models.device import Device
from recsys.registry.artifacts import ModelParts, write_version
from recsys.registry.gate import GateDecision
from recsys.registry.manifest import Manifest, Shapes
from recsys.registry.store import FileRegistry
from recsys.registry.versioning import ALS_MAJOR
from recsys.scoring.ann import ANN_MIN_ITEMS, build_index
from recsys.scoring.onnx_graph import export_scoring_graph
from recsys.trust.accounts import assess
from recsys.trust.policy import TrustParams

log = logging.getLogger(__name__)
BASELINE_CACHE = "cache/baselines"
"""Under the registry: baseline metrics per (data, split), reused while the data is unchanged."""
T = TypeVar("T")


@dataclass
class TrainRequest:
    """What to train on and how."""

    data: Path
    fmt: DataFormat = DataFormat.AUTO
    params: ALSParams = field(default_factory=ALSParams)
    device: Device = Device.AUTO
    duplicates: DuplicatePolicy = DuplicatePolicy.ERROR
    split_seed: int = 0
    eval_playlists: int = MAX_TEST_PLAYLISTS
    evaluate: bool = True
    refit: bool = False
    promote: bool = False
    major: int = ALS_MAJOR
    cache_baselines: bool = True
    ann: bool | None = None
    """Build the HNSW index for serving; ``None``: when the catalogue has ``ANN_MIN_ITEMS`` tracks."""
    feedback: Path | None = None
    """A feedback event log (``user_id,track_id,type,...``) added to ``data``, one row per listener."""
    trust: TrustParams = field(default_factory=TrustParams)
    """How much each listener's feedback counts, by account age (fake-account resistance)."""
    lineage: dict[str, Any] = field(default_factory=dict)
    """Recorded in the manifest's lineage besides the data's (e.g. the feedback log's offsets)."""


@dataclass
class TrainResult:
    """The registered version and what happened on the way."""

    manifest: Manifest
    report: EvaluationReport | None
    gate: GateDecision | None
    promoted: bool
    timings: dict[str, float]


class Progress:
    """Hooks the CLI uses to show progress; all optional."""

    def __init__(
        self, stage: Callable[[str], None] | None = None, iteration: ProgressCallback | None = None
    ) -> None:
        self.stage = stage or (lambda _name: None)
        self.iteration = iteration


class Timer:
    """Wall-clock seconds per named phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def train(request: TrainRequest, registry: FileRegistry, progress: Progress | None = None) -> TrainResult:
    """Run the whole job and register the new version (candidate; production if asked and the gate allows)."""
    progress = progress or Progress()
    timer = Timer()
    progress.stage("load data")
    data, trust = timer.run("load", lambda: _load(request))
    model = ALSModel(request.params, device=request.device)
    report = None
    full: sp.csr_matrix | None = None
    if request.evaluate:
        report = _fit_and_evaluate(data, trust, model, request, registry, timer, progress)
    if request.refit or not request.evaluate:
        full = timer.run("matrix", data.to_csr)
        progress.stage(f"fit ALS on all data ({request.params.iterations} iterations)")
        timer.run("fit", lambda: model.fit(full, progress=progress.iteration, row_weights=trust))
    index = _build_index(model, data, request, registry, timer, progress)
    progress.stage("export and register")
    writer = _writer(model, data, full, trust, request, report, _parent(registry), timer, index)
    try:
        manifest = timer.run("register", lambda: registry.register(writer, major=request.major))
    finally:
        if index is not None:
            index.unlink(missing_ok=True)
    gate, promoted = _maybe_promote(registry, manifest, request)
    return TrainResult(manifest, report, gate, promoted, timer.seconds)


def _load(request: TrainRequest) -> tuple[Interactions, np.ndarray | None]:
    """The data, plus listeners' feedback if any, and each row's weight when trust discounts some."""
    data = load(request.data, request.fmt, duplicates=request.duplicates)
    if request.feedback is None:
        return data, None
    events = load(request.feedback)
    trust = assess(events, request.trust)
    merged, counts = with_feedback(data, events)
    request.lineage["feedback"] = request.lineage.get("feedback", {}) | counts
    request.lineage["trust"] = trust.summary()
    return merged, trust.row_weights(data.n_rows) if trust.discounts else None


def _fit_and_evaluate(
    data: Interactions,
    trust: np.ndarray | None,
    model: ALSModel,
    request: TrainRequest,
    registry: FileRegistry,
    timer: Timer,
    progress: Progress,
) -> EvaluationReport:
    """Fit on the split's training part and score model and baselines on its test playlists."""
    progress.stage("split for evaluation")
    listeners = int(request.lineage.get("feedback", {}).get("listeners", 0))
    prepared = timer.run(
        "split",
        lambda: prepare(
            data,
            seed=request.split_seed,
            max_test=request.eval_playlists,
            test_rows_below=data.n_rows - listeners if listeners else None,
        ),
    )
    progress.stage(
        f"fit ALS ({request.params.iterations} iterations)" + (" + item-kNN" if model.params.blended else "")
    )
    timer.run("fit", lambda: model.fit(prepared.train, progress=progress.iteration, row_weights=trust))
    cache = BaselineCache(registry.root / BASELINE_CACHE) if request.cache_baselines else None
    sha = data.lineage.content_sha256 if data.lineage else None
    knn = model.knn or request.params.item_knn()
    methods, seconds = timer.run(
        "baselines",
        lambda: evaluate_baselines(
            prepared, stage=progress.stage, cache=cache, data_sha256=sha, item_knn=knn
        ),
    )
    progress.stage(f"evaluate {model.name}")
    methods[model.name] = timer.run("evaluate", lambda: score(model, prepared))
    return EvaluationReport(prepared.split.summary(), methods, seconds)


def _parent(registry: FileRegistry) -> str | None:
    try:
        return registry.resolve("production")
    except ModelNotFound:
        versions = registry.versions()
        return str(versions[-1]) if versions else None


def _writer(
    model: ALSModel,
    data: Interactions,
    full: sp.csr_matrix | None,
    trust: np.ndarray | None,
    request: TrainRequest,
    report: EvaluationReport | None,
    parent: str | None,
    timer: Timer,
    index: Path | None,
) -> Callable[[Path, str], Manifest]:
    def write(folder: Path, version: str) -> Manifest:
        if (
            model.item_factors is None
            or model.user_factors is None
            or model.confidence is None
            or model.report is None
        ):
            raise RuntimeError("the model was not fitted")
        held = _membership(full if full is not None else data.to_csr())
        parts = ModelParts(
            item_factors=model.item_factors,
            row_factors=model.user_factors,
            row_items=held,
            item_ids=data.item_ids,
            row_ids=data.row_ids,
            confidence=model.confidence,
            track_meta=data.track_meta,
            similarity=model.knn.similarity if model.knn is not None else None,
            ann_index=index,
            popularity=None if trust is None else _popularity(held, trust),
        )
        manifest = Manifest(
            version=version,
            parent_version=parent,
            algorithm=model.name,
            params=request.params.model_dump(mode="json")
            | {
                "refit": request.refit,
                "knn_neighbours_used": model.knn.neighbours if model.knn is not None else 0,
            },
            device=model.report.device.value,
            lineage=(data.lineage.as_dict() if data.lineage else {}) | data.stats() | request.lineage,
            metrics=report.as_dict() if report else {},
            timings=dict(timer.seconds) | {"iteration_mean": float(np.mean(model.report.iteration_seconds))},
            shapes=Shapes(items=data.n_items, rows=data.n_rows, factors=request.params.factors),
        )
        return write_version(folder, parts, manifest, export_scoring_graph)

    return write


def _build_index(
    model: ALSModel,
    data: Interactions,
    request: TrainRequest,
    registry: FileRegistry,
    timer: Timer,
    progress: Progress,
) -> Path | None:
    """The HNSW index file, built outside the registry lock (minutes on a large catalogue)."""
    wanted = request.ann if request.ann is not None else data.n_items >= ANN_MIN_ITEMS
    factors = model.item_factors
    if not wanted or factors is None:
        return None
    progress.stage(f"build the approximate index ({data.n_items:,} tracks)")
    path = registry.root / "cache" / f"index-{uuid.uuid4().hex}.faiss"
    path.parent.mkdir(parents=True, exist_ok=True)
    timer.run("index", lambda: build_index(factors, path))
    return path


def _membership(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Which tracks each row holds (any weight, dislikes included): never recommend them back."""
    held = matrix.copy()
    held.data = np.ones_like(held.data)
    return held


def _popularity(held: sp.csr_matrix, trust: np.ndarray) -> np.ndarray:
    """Rows holding each track, each row counted by its trust (the serving's most-popular fallback)."""
    rows = np.repeat(np.arange(held.shape[0]), np.diff(held.indptr))
    return np.bincount(held.indices, weights=trust[rows], minlength=held.shape[1]).astype(np.float32)


def _maybe_promote(
    registry: FileRegistry, manifest: Manifest, request: TrainRequest
) -> tuple[GateDecision | None, bool]:
    if not request.promote:
        return (registry.check_promotion(manifest.version) if request.evaluate else None), False
    decision = registry.check_promotion(manifest.version)
    if decision.allowed:
        registry.promote(manifest.version)
    return decision, decision.allowed
