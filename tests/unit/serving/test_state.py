"""The model watcher's thread yields the CPU to request threads while it loads."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from serving.state import LOADER_NICENESS, lower_this_threads_priority


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
