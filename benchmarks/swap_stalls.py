"""Stalls during a model swap, in one process: load a version, load another beside it, switch,
free the first as the server's watcher does, and keep scoring throughout.

A thread sleeping 1 ms records every wake-up more than ``--late-ms`` late (the GIL, or the
CPU, was held elsewhere), and a GC callback every collection over 10 ms. A second thread
scores one playlist every 10 ms with the serving version, as the server's scoring thread
would at 100 req/s. Without HTTP or a load generator, what this shows is the swap's own
cost; what a served swap adds on top is in ``serving_load.py --swap-to``.

    python benchmarks/swap_stalls.py --registry bench-out/serve-2m --first 2.1 --second 2.2
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from report import emit  # benchmarks/report.py, next to this script

from recsys.registry.store import FileRegistry
from recsys.scoring.recommender import Query
from serving.settings import ServingSettings
from serving.state import LOADER_NICENESS, RETIRE_AFTER_S, ModelHolder, lower_this_threads_priority

GC_REPORTED_S = 0.01


class StallLog:
    """Late wake-ups and long GC passes, with the phase of the swap they fell in."""

    def __init__(self, late_s: float) -> None:
        self.late_s, self.phase, self.started = late_s, "start", time.perf_counter()
        self.events: list[dict[str, Any]] = []
        self._gc_started = 0.0
        self._stop = threading.Event()

    def record(self, kind: str, ms: float) -> None:
        at = round(time.perf_counter() - self.started, 2)
        self.events.append({"at_s": at, "phase": self.phase, "kind": kind, "ms": round(ms, 1)})

    def watch(self) -> None:
        gc.callbacks.append(self._gc)
        threading.Thread(target=self._sleeper, name="sleeper", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        gc.callbacks.remove(self._gc)

    def _sleeper(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            time.sleep(0.001)
            late = time.perf_counter() - start - 0.001
            if late > self.late_s:
                self.record("late wake-up", late * 1e3)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif (took := time.perf_counter() - self._gc_started) > GC_REPORTED_S:
            self.record(f"gc generation {info['generation']}", took * 1e3)


def keep_scoring(
    holder: ModelHolder, stalls: StallLog, stop: threading.Event, done: dict[str, list[float]]
) -> None:
    """One playlist of 20 known tracks every 10 ms, with whatever version serves now; the
    time of each call goes to ``done`` under the swap's phase."""
    rng = random.Random(0)
    while not stop.is_set():
        current = holder.current
        if current is not None:
            tracks = current.model.item_ids.externals(rng.sample(range(len(current.model.item_ids)), 20))
            start = time.perf_counter()
            current.recommend([Query(tracks=tracks, k=20)])
            done.setdefault(stalls.phase, []).append(time.perf_counter() - start)
        time.sleep(0.01)


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "calls": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2] * 1e3, 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1e3, 2),
        "max_ms": round(ordered[-1] * 1e3, 2),
        "over_100ms": sum(s > 0.1 for s in ordered),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--first", required=True, help="version serving before the swap")
    parser.add_argument("--second", required=True, help="version swapped in")
    parser.add_argument("--late-ms", type=float, default=20.0, help="report wake-ups later than this")
    parser.add_argument(
        "--after-s", type=float, default=8.0, help="keep watching this long after the release"
    )
    parser.add_argument(
        "--switch-interval-ms", type=float, default=None, help="Python's GIL switch interval (default 5 ms)"
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.switch_interval_ms:
        sys.setswitchinterval(args.switch_interval_ms / 1e3)

    # as in the server: checksums read at its default pace, the loader below the scoring thread
    holder = ModelHolder(
        FileRegistry(args.registry), verify_bytes_per_s=ServingSettings().verify_mb_per_s * 1e6
    )
    stalls, stop, scored = StallLog(args.late_ms / 1e3), threading.Event(), {}
    stalls.watch()
    timings: dict[str, float] = {}
    scorer = threading.Thread(target=keep_scoring, args=(holder, stalls, stop, scored), daemon=True)
    scorer.start()
    lower_this_threads_priority(LOADER_NICENESS)
    for phase, step in (
        (f"load {args.first}", lambda: holder.load(args.first)),
        (f"load {args.second} beside it and switch", lambda: holder.load(args.second)),
        (f"release {args.first}", lambda: holder.release_retired(grace_s=RETIRE_AFTER_S)),
        ("after the release", lambda: time.sleep(args.after_s)),
    ):
        stalls.phase = phase
        started = time.perf_counter()
        step()
        timings[phase] = round(time.perf_counter() - started, 2)
    stop.set()
    scorer.join()
    stalls.stop()
    result = {
        "registry": str(args.registry),
        "phase_seconds": timings,
        "late_ms_reported": args.late_ms,
        "switch_interval_ms": sys.getswitchinterval() * 1e3,
        "stalls": stalls.events,
        "scoring_by_phase": {phase: _summary(times) for phase, times in scored.items()},
    }
    return emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
