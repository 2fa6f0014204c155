"""The model the service answers with, swapped atomically when a new one is loaded and verified."""

from __future__ import annotations

import logging
import os
import sys
import threading

from recsys.errors import ModelUnavailable, RecsysError
from recsys.recommender import VersionRecommender
from recsys.registry import FileRegistry
from recsys.rollout import CONTROL, Assignment, RolloutPlan, assign

log = logging.getLogger(__name__)
LOADER_NICENESS = 10
"""How much lower than the request threads the model watcher runs: loading and verifying a
new version competes with requests for the CPU, and requests must win."""


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

    def _open(self, ref: str) -> VersionRecommender:
        """Load and verify a version, start its scoring session and warm it up.

        The first version loads at full speed; later ones (swaps, treatments) verify at the
        configured pace while the current one answers requests.
        """
        background = self._current is not None
        recommender = VersionRecommender(
            self.registry.load(ref, max_bytes_per_s=self.verify_bytes_per_s if background else None),
            prefer_gpu=self.prefer_gpu,
            threads=self.threads,
            approximate=self.approximate,
        )
        recommender.warm_up()
        return recommender

    @property
    def current(self) -> VersionRecommender | None:
        return self._current

    def load(self, ref: str) -> VersionRecommender:
        """Load and verify ``ref``, then switch to it; raises (and keeps the old model) on failure."""
        with self._lock:
            recommender = self._open(ref)
            previous = self._current.version if self._current else None
            self._current = recommender
            log.info("model %s serving (was %s) on %s", recommender.version, previous, recommender.provider)
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
        self._treatments, self.plan = loaded, plan
        log.info("rollout plan revision %d: %s", plan.revision, sorted(loaded))
        return True

    def for_user(self, user_id: str) -> tuple[VersionRecommender, Assignment]:
        """The recommender answering ``user_id`` under the current plan (production if its arm is missing)."""
        production = self._current
        if production is None:
            raise ModelUnavailable("no verified model is loaded yet")
        assignment = assign(user_id=user_id, plan=self.plan)
        if assignment.version is None:
            return production, assignment
        treatment = self._treatments.get(assignment.version)
        if treatment is None:
            return production, Assignment(None, CONTROL)
        return treatment, assignment

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
