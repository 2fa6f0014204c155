"""The model watcher's thread yields the CPU to request threads while it loads, and frees
swapped-out versions gently; loaded versions are kept out of the collector's full passes."""

from __future__ import annotations

import gc
import os
import sys
import threading
import weakref

import pytest

from recsys.registry.store import FileRegistry
from serving.state import LOADER_NICENESS, ModelHolder, lower_this_threads_priority, settle_heap


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is a Linux feature")
def test_only_the_calling_thread_is_lowered() -> None:
    seen: dict[str, int] = {}

    def loader() -> None:
        lower_this_threads_priority(LOADER_NICENESS)
        seen["loader"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=loader)
    thread.start()
    thread.join()
    assert seen["loader"] == min(before + LOADER_NICENESS, 19)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # requests keep theirs


def test_a_swapped_out_version_is_released_and_the_serving_ones_are_not(
    experiment_registry: FileRegistry,
) -> None:
    holder = ModelHolder(experiment_registry)
    first = holder.load("2.1")
    holder.refresh_plan()  # 2.2 serves its experiment's treatment arm
    first.model.item_ids.get("x")  # look-ups built, as requests would
    holder.load("2.2")  # production moves on; 2.1 stops serving
    treatment = holder.treatments.get("2.2")
    assert holder.release_retired(grace_s=0) == 1
    assert first.model.item_ids._index is None and first.model.row_ids._index is None
    assert holder.release_retired(grace_s=0) == 0
    assert holder.current is not None and holder.current.model.item_ids._index is not None
    assert treatment is not None and treatment.model.item_ids._index is not None


def test_loaded_versions_are_frozen_out_of_full_collections_and_still_freed_when_retired(
    experiment_registry: FileRegistry,
) -> None:
    holder = ModelHolder(experiment_registry)
    gc.unfreeze()
    try:
        holder.load("2.1")
        assert gc.get_freeze_count() > 0
        current = holder.current
        assert current is not None
        gone = weakref.ref(current.model)
        lookups = weakref.ref(current.fold_in)
        del current
        holder.load("2.2")
        assert holder.release_retired(grace_s=0) == 1
        # no reference cycle keeps a retired version alive: frozen objects are never collected
        assert gone() is None and lookups() is None
    finally:
        gc.unfreeze()


def test_settle_heap_collects_then_freezes() -> None:
    try:
        garbage = weakref.ref(_Box([]))  # unreachable, in a reference cycle
        kept = _Box([])
        frozen_before = gc.get_freeze_count()
        settle_heap()
        assert garbage() is None  # collected before the freeze
        assert gc.get_freeze_count() > frozen_before and kept.cycle[0] is kept
    finally:
        gc.unfreeze()


class _Box:
    """Refers to a list that refers back to it."""

    def __init__(self, cycle: list[object]) -> None:
        self.cycle = cycle
        cycle.append(self)
