"""The model watcher's thread yields the CPU to request threads while it loads, and frees
swapped-out versions gently."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from recsys.registry import FileRegistry
from serving.state import LOADER_NICENESS, ModelHolder, lower_this_threads_priority


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
    treatment = holder._treatments.get("2.2")
    assert holder.release_retired(grace_s=0) == 1
    assert first.model.item_ids._index is None and first.model.row_ids._index is None
    assert holder.release_retired(grace_s=0) == 0
    assert holder.current is not None and holder.current.model.item_ids._index is not None
    assert treatment is not None and treatment.model.item_ids._index is not None
