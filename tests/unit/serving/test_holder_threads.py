"""Plan refreshes from several threads (the watcher, admin routes) while requests pick versions."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from recsys.registry.plan import Experiment
from recsys.registry.store import FileRegistry
from recsys.scoring.recommender import VersionRecommender
from serving.state import ModelHolder

RUN_S = 1.5


class Recorder:
    """Counts the versions opened and released, and any version opened twice at once."""

    def __init__(self, holder: ModelHolder, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened: list[VersionRecommender] = []
        self.released: Counter[int] = Counter()
        self.overlaps: list[str] = []
        self._opening: set[str] = set()
        self._lock = threading.Lock()
        open_version, release = holder._open, VersionRecommender.release

        def counted_open(ref: str) -> VersionRecommender:
            with self._lock:
                if ref in self._opening:
                    self.overlaps.append(ref)
                self._opening.add(ref)
            try:
                recommender = open_version(ref)
            finally:
                with self._lock:
                    self._opening.discard(ref)
            with self._lock:
                self.opened.append(recommender)
            return recommender

        def counted_release(recommender: VersionRecommender) -> None:
            with self._lock:
                self.released[id(recommender)] += 1
            release(recommender)

        monkeypatch.setattr(holder, "_open", counted_open)
        monkeypatch.setattr(VersionRecommender, "release", counted_release)


def hammer(
    workers: dict[str, Callable[[random.Random], None]],
    seed: int,
    covered: Callable[[], bool] = lambda: True,
) -> list[BaseException]:
    """Run each worker in a loop on its own thread for ``RUN_S``, and on (up to five times as
    long) until ``covered()`` says the run went through what it must; the exceptions raised."""
    stop, failures = threading.Event(), []

    def loop(work: Callable[[random.Random], None], rng: random.Random) -> None:
        try:
            while not stop.is_set():
                work(rng)
        except BaseException as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=loop, args=(work, random.Random(seed * 100 + i)), name=name)
        for i, (name, work) in enumerate(workers.items())
    ]
    for thread in threads:
        thread.start()
    time.sleep(RUN_S)
    deadline = time.monotonic() + 4 * RUN_S
    while not covered() and time.monotonic() < deadline:  # a slow machine: go on a while longer
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    return failures


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_concurrent_plan_refreshes_never_load_twice_leak_or_mix_versions(
    experiment_registry: FileRegistry, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    holder = ModelHolder(experiment_registry)
    holder.load("2.1")
    recorder = Recorder(holder, monkeypatch)
    answered: Counter[str] = Counter()

    def change_plan(rng: random.Random) -> None:
        """Mostly a new share (a new revision, same versions), sometimes the experiment stops."""
        if holder.registry.rollout().experiments and rng.random() < 0.3:
            holder.registry.stop_experiment("v2.2")
        else:
            share = rng.choice([0.2, 0.5, 0.9])
            holder.registry.set_experiment(Experiment(name="v2.2", treatment="2.2", share=share))
        time.sleep(rng.uniform(0.02, 0.1))

    def refresh(rng: random.Random) -> None:
        holder.refresh_plan()
        time.sleep(rng.uniform(0, 0.01))

    def request(rng: random.Random) -> None:
        recommender, assignment, partner = holder.for_user(f"user-{rng.randrange(1000)}")
        expected = assignment.version or "2.1"
        assert recommender.version == expected, (recommender.version, assignment)
        assert partner is None
        answered[recommender.version] += 1
        time.sleep(0)  # let the loading threads have the interpreter too

    def release(rng: random.Random) -> None:
        holder.release_retired(grace_s=rng.uniform(0, 0.02))

    workers: dict[str, Callable[[random.Random], None]] = {"plan": change_plan, "release": release}
    workers |= {f"refresh-{i}": refresh for i in range(3)}
    workers |= {f"request-{i}": request for i in range(3)}
    assert hammer(workers, seed, lambda: len(recorder.opened) > 1 and answered["2.2"] > 0) == []

    holder.refresh_plan()
    holder.release_retired(grace_s=0)
    assert recorder.overlaps == []  # a version is never loaded twice at once
    serving = {id(r) for r in (holder.current, *holder.treatments.values())}
    for recommender in recorder.opened:  # every version loaded is serving or was freed, once
        assert recorder.released[id(recommender)] == (0 if id(recommender) in serving else 1)
    assert answered["2.1"] > 0 and answered["2.2"] > 0 and len(recorder.opened) > 1
    plan = holder.registry.rollout()
    assert holder.plan == plan and set(holder.treatments) == plan.versions()
