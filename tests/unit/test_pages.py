"""Faulting in mapped files: the pages end up in the process, nothing is copied."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys.registry.store import FileRegistry
from recsys.scoring import memory_pages as pages
from recsys.scoring.recommender import VersionRecommender
from training.pipeline import TrainResult

MB = 1 << 20

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


def resident_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


def file_backed(array: np.ndarray) -> bool:
    base: object = array
    while isinstance(base, np.ndarray | memoryview):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    return isinstance(base, mmap.mmap)


@pytest.fixture
def mapped(tmp_path: Path) -> np.ndarray:
    """24 MB of float32 in a file, mapped and not yet touched."""
    path = tmp_path / "part.npy"
    np.save(path, np.arange(6 * MB, dtype=np.float32))
    array: np.ndarray = np.load(path, mmap_mode="r")
    return array


@linux_only
@pytest.mark.parametrize("advise", [True, False], ids=["madvise", "touch"])
def test_populate_maps_every_page_of_a_file_without_copying(
    mapped: np.ndarray, advise: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not advise:
        monkeypatch.setattr(pages, "_MADVISE", None)
    file_before, anon_before = resident_kb("RssFile"), resident_kb("RssAnon")
    covered = pages.populate([mapped], slice_bytes=4 * MB)
    assert covered == mapped.nbytes
    assert resident_kb("RssFile") - file_before >= 0.95 * mapped.nbytes / 1024
    assert resident_kb("RssAnon") - anon_before < 0.1 * mapped.nbytes / 1024


def test_a_strided_view_is_covered_from_its_first_to_its_last_element() -> None:
    matrix = np.zeros((100, 10), dtype=np.float32)
    assert pages.populate([matrix[:, 3]]) == 99 * 40 + 4
    assert pages.populate([matrix[::-1]]) == matrix.nbytes
    assert pages.populate([np.zeros(0), matrix[:1]]) == 40


def test_warm_up_populates_the_mapped_files_of_the_version(
    trained_blend: tuple[FileRegistry, TrainResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, result = trained_blend
    recommender = VersionRecommender(registry.load(result.manifest.version))
    seen: list[np.ndarray] = []
    monkeypatch.setattr("recsys.scoring.recommender.populate", lambda arrays: seen.extend(arrays))
    recommender.warm_up()
    model = recommender.model
    assert model.similarity is not None
    for array in (model.item_factors, model.row_factors, model.similarity.indices, model.similarity.data):
        assert file_backed(array)
        assert any(a is array for a in seen)
