"""The file registry: atomic registration, verification, promotion through the gate, rollback."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import pytest

from recsys.errors import (
    ArtifactCorrupt,
    InvalidRequest,
    ModelNotFound,
    NothingToRollBack,
    PromotionRefused,
    VersionConflict,
)
from recsys.registry.artifacts import ITEM_FACTORS, ITEMS, ROWS, SCORING
from recsys.registry.experiment_log import Promoted, RolledBack
from recsys.registry.manifest import MANIFEST_FILE, Manifest, Stage
from recsys.registry.store import STAGING, VERSIONS, FileRegistry
from recsys.registry.versioning import Version, next_version
from training.pipeline import TrainResult


def clone_version(source: FileRegistry, target: FileRegistry, *, ndcg: float, baseline: float = 0.01) -> str:
    """Register a copy of the trained model with chosen offline metrics."""
    folder = source.folder("production")

    def write(staging: Path, version: str) -> Manifest:
        shutil.copytree(folder, staging)
        manifest = Manifest.model_validate_json((staging / MANIFEST_FILE).read_text())
        manifest.version = version
        manifest.metrics = {"methods": {"als": {"ndcg@500": ndcg}, "item_knn": {"ndcg@500": baseline}}}
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json())
        return manifest

    return target.register(write).version


def test_versions_are_ordered_numbers() -> None:
    assert Version.parse("2.10") > Version.parse("2.9")
    assert str(next_version([Version(2, 1), Version(2, 2), Version(3, 1)])) == "2.3"
    assert str(next_version([Version(2, 4)], major=3)) == "3.1"
    with pytest.raises(InvalidRequest, match="not a model version"):
        Version.parse("v2")


def test_trained_version_is_complete_and_verified(
    trained: tuple[FileRegistry, TrainResult],
) -> None:
    registry, result = trained
    assert result.manifest.version == "2.1"
    assert registry.resolve("production") == registry.resolve("latest") == "2.1"
    manifest = registry.verify("2.1")
    assert set(manifest.files) >= {ITEM_FACTORS, SCORING, ITEMS, ROWS}
    assert manifest.lineage["content_sha256"] and manifest.lineage["interactions"] > 0
    assert manifest.device == "cpu" and manifest.params["factors"] == 16
    assert {"als", "most_popular", "item_knn"} <= set(manifest.metrics["methods"])
    assert not (registry.root / STAGING).exists() or not any((registry.root / STAGING).iterdir())


def test_a_loaded_versions_playlist_matrix_allocates_no_values(
    trained: tuple[FileRegistry, TrainResult],
) -> None:
    """Its values are all 1: one read-only value, not an array as long as its entries."""
    model = trained[0].load("2.1")
    matrix = model.row_items
    assert matrix.nnz > 0 and matrix.data.strides == (0,) and not matrix.data.flags.writeable
    assert set(matrix[:5].toarray().ravel()) <= {0.0, 1.0}
    assert matrix[3].indices.tolist() == matrix.indices[matrix.indptr[3] : matrix.indptr[4]].tolist()


def test_promote_rollback_cycle(trained: tuple[FileRegistry, TrainResult], registry: FileRegistry) -> None:
    source, _ = trained
    first = clone_version(source, registry, ndcg=0.2)
    registry.promote(first)
    better = clone_version(source, registry, ndcg=0.3)
    assert registry.resolve("candidate") == better == "2.2"
    registry.promote(better)
    assert registry.production() == "2.2" and registry.stage("2.1") is Stage.ARCHIVED
    assert registry.rollback() == "2.1"
    assert registry.production() == "2.1" and registry.stage("2.2") is Stage.ARCHIVED
    with pytest.raises(NothingToRollBack):
        registry.rollback()
    last = registry.records().records[-1]
    assert isinstance(last, RolledBack) and (last.version, last.from_version) == ("2.1", "2.2")
    assert [r.kind for r in registry.records().records] == [
        "registered", "promoted", "registered", "promoted", "rolled_back"
    ]  # fmt: skip


def test_gate_refuses_worse_than_production_unless_forced(
    trained: tuple[FileRegistry, TrainResult], registry: FileRegistry
) -> None:
    source, _ = trained
    registry.promote(clone_version(source, registry, ndcg=0.3))
    worse = clone_version(source, registry, ndcg=0.25)
    with pytest.raises(PromotionRefused, match=r"worse than production 2\.1"):
        registry.promote(worse)
    assert registry.production() == "2.1"
    registry.promote(worse, force=True)
    assert registry.production() == worse
    last = registry.records().records[-1]
    assert isinstance(last, Promoted) and last.forced and last.summary == "promoted (forced)"


def test_gate_refuses_a_model_that_loses_to_a_baseline(
    trained: tuple[FileRegistry, TrainResult], registry: FileRegistry
) -> None:
    source, _ = trained
    weak = clone_version(source, registry, ndcg=0.1, baseline=0.2)
    with pytest.raises(PromotionRefused, match="does not beat baseline item_knn"):
        registry.promote(weak)


def test_a_corrupt_version_is_refused(
    trained: tuple[FileRegistry, TrainResult], registry: FileRegistry
) -> None:
    source, _ = trained
    version = clone_version(source, registry, ndcg=0.3)
    registry.promote(version)
    target = registry.folder(version) / ITEM_FACTORS
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupt, match=r"item_factors\.npy fails its checksum"):
        registry.load(version)
    (registry.folder(version) / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ArtifactCorrupt, match=r"invalid manifest\.json"):
        registry.verify(version)


def test_a_crash_mid_write_registers_nothing(registry: FileRegistry) -> None:
    def crashing_writer(staging: Path, version: str) -> Manifest:
        staging.mkdir(parents=True)
        (staging / ITEM_FACTORS).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        registry.register(crashing_writer)
    assert registry.versions() == []
    assert not any((registry.root / STAGING).iterdir())
    with pytest.raises(ModelNotFound):
        registry.resolve("latest")


def test_a_staging_leftover_is_never_listed(registry: FileRegistry) -> None:
    (registry.root / STAGING / "2.1-deadbeef").mkdir(parents=True)
    (registry.root / VERSIONS).mkdir(parents=True)
    assert registry.versions() == []


def test_unknown_refs(registry: FileRegistry) -> None:
    with pytest.raises(ModelNotFound, match="no model 'production'"):
        registry.resolve("production")
    with pytest.raises(InvalidRequest):
        registry.resolve("banana")


def _register_in_process(root: str, source: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(clone_version(FileRegistry(Path(source)), FileRegistry(Path(root)), ndcg=0.2))


def test_concurrent_writers_get_distinct_versions(
    trained: tuple[FileRegistry, TrainResult], registry: FileRegistry
) -> None:
    source, _ = trained
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [
        ctx.Process(target=_register_in_process, args=(str(registry.root), str(source.root), queue))
        for _ in range(3)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert sorted(queue.get(timeout=5) for _ in workers) == ["2.1", "2.2", "2.3"]
    records = registry.records()
    assert [(r.kind, r.seq) for r in records.records] == [("registered", n) for n in (1, 2, 3)]
    assert not records.problems and "log" not in registry.state()


def test_version_conflict(trained: tuple[FileRegistry, TrainResult], registry: FileRegistry) -> None:
    source, _ = trained
    clone_version(source, registry, ndcg=0.2)
    with pytest.raises(VersionConflict):
        registry.register(lambda staging, version: Manifest.model_validate({}), version="2.1")


def test_retraining_on_unchanged_data_reuses_the_baselines(
    synth_parquet: Path, registry: FileRegistry
) -> None:
    from recsys.models.als import ALSParams
    from recsys.models.device import Device
    from training.pipeline import TrainRequest, train

    params = ALSParams(factors=8, iterations=2)
    first = train(TrainRequest(data=synth_parquet, params=params, device=Device.CPU), registry)
    second = train(
        TrainRequest(data=synth_parquet, params=params.model_copy(update={"factors": 12}), device=Device.CPU),
        registry,
    )
    assert first.report is not None and second.report is not None
    assert "cached" not in first.report.seconds and second.report.seconds["cached"] == 1.0
    for name in ("most_popular", "item_knn"):
        assert second.report.methods[name] == first.report.methods[name]
    uncached = train(
        TrainRequest(
            data=synth_parquet, params=params, device=Device.CPU, cache_baselines=False, split_seed=3
        ),
        registry,
    )
    assert uncached.report is not None and "cached" not in uncached.report.seconds


def test_paced_verification_reads_no_faster_than_asked(tmp_path: Path) -> None:
    """A server verifies a new version at a pace; the digest is the same."""
    import hashlib
    import os
    import time

    from recsys.data.lineage import file_sha256

    path = tmp_path / "blob"
    data = os.urandom(3 * 2**20)
    path.write_bytes(data)
    start = time.monotonic()
    digest = file_sha256(path, max_bytes_per_s=10 * 2**20)
    assert time.monotonic() - start >= 0.25  # 3 MiB at 10 MiB/s: at least 0.3 s, less some slack
    assert digest == file_sha256(path) == hashlib.sha256(data).hexdigest()
