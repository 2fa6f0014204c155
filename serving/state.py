"""The model the service answers with, swapped atomically when a new one is loaded and verified."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time

from recsys.errors import ModelUnavailable, RecsysError
from recsys.recommender import VersionRecommender
from recsys.registry import FileRegistry
from recsys.rollout import CONTROL, Assignment, RolloutPlan, assign

log = logging.getLogger(__name__)
LOADER_NICENESS = 10
"""How much lower than the request threads the model watcher runs: loading and verifying a
new version competes with requests for the CPU, and requests must win."""


RETIRE_AFTER_S = 2.0
"""How long a version that stopped serving is kept before it is freed (requests in flight)."""


def settle_heap() -> None:
    """Collect start-up garbage, then exempt every object alive from the collector's full passes.

    A full (oldest-generation) collection walks every container the process holds, the
    loaded versions' id look-ups included, while no thread can run: 45 and 78 ms at 200k
    tracks, seen as clusters of slow requests some seconds after start-up. Objects alive
    after start-up (and each version loaded later, see :meth:`ModelHolder._open`) are
    frozen (``gc.freeze``) so those passes skip them. A version's objects hold no reference
    cycles, so it is still freed, by reference counting, when it is retired.
    """
    gc.collect()
    gc.freeze()


class Watcher:
    """Background thread that calls :meth:`ModelHolder.refresh` every ``interval_s`` seconds
    (never, if 0) and at once whenever :meth:`wake` is called (a ``model-events`` message)."""

    def __init__(self, holder: ModelHolder, ref: str, interval_s: float) -> None:
        self.holder, self.ref, self.interval_s = holder, ref, interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, _message: bytes | None = None) -> None:
        """Check the registry now instead of at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.interval_s + 5)

    def _run(self) -> None:
        lower_this_threads_priority(LOADER_NICENESS)
        while True:
            self._wake.wait(self.interval_s or None)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.holder.refresh(self.ref)
            self.holder.refresh_plan()
            self.holder.release_retired()


def lower_this_threads_priority(niceness: int) -> None:
    """Make the calling thread (on Linux, not the whole process) yield the CPU to the others."""
    if sys.platform != "linux":  # elsewhere setpriority would apply to the whole process
        return
    me = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, me, min(os.getpriority(os.PRIO_PROCESS, me) + niceness, 19))
    except OSError as exc:  # not allowed here: it only costs latency during a swap
        log.debug("model watcher keeps its priority: %s", exc)


class ModelHolder:
    """Holds the current recommender; a failed load leaves the previous one serving."""

    def __init__(
        self,
        registry: FileRegistry,
        *,
        prefer_gpu: bool = False,
        threads: int = 0,
        approximate: bool = True,
        verify_bytes_per_s: float | None = None,
    ) -> None:
        self.registry = registry
        self.prefer_gpu, self.threads, self.approximate = prefer_gpu, threads, approximate
        self.verify_bytes_per_s = verify_bytes_per_s
        """Pace of checksum verification once a model serves (a swap must not slow requests)."""
        self._current: VersionRecommender | None = None
        self._failed: str | None = None
        self._lock = threading.Lock()
        self.plan = RolloutPlan()
        self._treatments: dict[str, VersionRecommender] = {}
        self._failed_treatments: set[str] = set()
        self._retired: list[VersionRecommender] = []

    def _open(self, ref: str) -> VersionRecommender:
        """Load and verify a version, start its scoring session and warm it up.

        The first version loads at full speed; later ones (swaps, treatments) verify at the
        configured pace while the current one answers requests.
        """
        background = self._current is not None
        started = time.perf_counter()
        model = self.registry.load(ref, max_bytes_per_s=self.verify_bytes_per_s if background else None)
        loaded = time.perf_counter()
        recommender = VersionRecommender(
            model, prefer_gpu=self.prefer_gpu, threads=self.threads, approximate=self.approximate
        )
        scoring = time.perf_counter()
        recommender.warm_up()
        gc.freeze()  # the new version joins the objects full collections skip (settle_heap)
        log.info(
            "model %s ready: verified and read in %.1f s, scorer %.1f s, warm-up %.1f s",
            model.version,
            loaded - started,
            scoring - loaded,
            time.perf_counter() - scoring,
        )
        return recommender

    @property
    def current(self) -> VersionRecommender | None:
        return self._current

    def load(self, ref: str) -> VersionRecommender:
        """Load and verify ``ref``, then switch to it; raises (and keeps the old model) on failure."""
        with self._lock:
            recommender = self._open(ref)
            previous, self._current = self._current, recommender
            if previous is not None:
                self._retired.append(previous)
            was = previous.version if previous else None
            log.info("model %s serving (was %s) on %s", recommender.version, was, recommender.provider)
            return recommender

    def refresh(self, ref: str) -> bool:
        """Serve what ``ref`` resolves to now, if that changed; ``True`` when a new version was loaded.

        A version that fails to load is remembered and not retried until ``ref`` moves on, while
        the current model keeps serving.
        """
        try:
            target = self.registry.resolve(ref)
        except RecsysError:
            return False
        if (self._current is not None and self._current.version == target) or target == self._failed:
            return False
        try:
            self.load(target)
        except RecsysError as exc:
            self._failed = target
            log.error("model %s refused, still serving %s: %s", target, self.version_or_none, exc.message)
            return False
        self._failed = None
        return True

    def refresh_plan(self) -> bool:
        """Load the treatment versions of a changed rollout plan, then switch to it atomically."""
        plan = self.registry.rollout()
        if (
            plan.revision == self.plan.revision
            and plan.versions() <= set(self._treatments) | self._failed_treatments
        ):
            return False
        loaded: dict[str, VersionRecommender] = {}
        for version in sorted(plan.versions()):
            existing = self._treatments.get(version)
            if existing is None and self._current is not None and self._current.version == version:
                existing = self._current
            if existing is None and version not in self._failed_treatments:
                try:
                    existing = self._open(version)
                except RecsysError as exc:
                    self._failed_treatments.add(version)
                    log.error("treatment %s refused; its users get production: %s", version, exc.message)
            if existing is not None:
                loaded[version] = existing
        kept = {id(r) for r in loaded.values()}
        self._retired.extend(r for r in self._treatments.values() if id(r) not in kept)
        self._treatments, self.plan = loaded, plan
        log.info("rollout plan revision %d: %s", plan.revision, sorted(loaded))
        return True

    def release_retired(self, grace_s: float = RETIRE_AFTER_S) -> int:
        """Free versions that stopped serving, gently; returns how many were freed.

        Waits ``grace_s`` first, so requests that picked a version just before the switch
        finish with it. Called from the model watcher's thread: freeing a large version in
        one go (millions of ids) would stall the requests for a quarter of a second.
        """
        serving = {id(r) for r in (self._current, *self._treatments.values()) if r is not None}
        retired = [r for r in self._retired if id(r) not in serving]
        self._retired = []
        if not retired:
            return 0
        time.sleep(grace_s)
        started = time.perf_counter()
        for recommender in retired:
            recommender.release()
        versions = [r.version for r in retired]
        retired.clear()
        log.info("released %s in %.1f s", ", ".join(versions), time.perf_counter() - started)
        return len(versions)

    def for_user(self, user_id: str) -> tuple[VersionRecommender, Assignment, VersionRecommender | None]:
        """The recommender answering ``user_id`` under the current plan (production if its arm is
        missing), its assignment, and for a user in an interleaving experiment the production
        version whose list is merged with the treatment's (``None`` otherwise, and when the
        treatment is production itself)."""
        production = self._current
        if production is None:
            raise ModelUnavailable("no verified model is loaded yet")
        assignment = assign(user_id=user_id, plan=self.plan)
        if assignment.version is None:
            return production, assignment, None
        treatment = self._treatments.get(assignment.version)
        if treatment is None or (assignment.interleaved and treatment.version == production.version):
            return production, Assignment(None, CONTROL), None
        return treatment, assignment, production if assignment.interleaved else None

    def provider_of(self, version: str) -> str | None:
        """onnxruntime provider of a loaded version (None when not loaded)."""
        if self._current is not None and self._current.version == version:
            return self._current.provider
        treatment = self._treatments.get(version)
        return treatment.provider if treatment else None

    def loaded_versions(self) -> set[str]:
        return {v for v in (self.version_or_none, *self._treatments) if v}

    @property
    def version_or_none(self) -> str | None:
        return self._current.version if self._current else None

    def try_load(self, ref: str) -> bool:
        """Like :meth:`load`, but logs the failure instead of raising (used at start-up)."""
        try:
            self.load(ref)
        except RecsysError as exc:
            log.error("model %s not loaded: %s", ref, exc.message)
            return False
        return True
