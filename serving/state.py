"""The model the service answers with, swapped atomically when a new one is loaded and verified."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from recsys.errors import ModelUnavailable, RecsysError, RegistryUnreadable
from recsys.experiments.assignment import Assignment, assign
from recsys.registry.plan import CONTROL, RolloutPlan
from recsys.registry.store import FileRegistry
from recsys.scoring.recommender import VersionRecommender
from serving.background import FailureStreak
from serving.metrics import REGISTRY_CHECK_AGE

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


UNREADY_AFTER_CHECKS = 3
"""Failed registry checks, in check intervals, after which ``/readyz`` answers 503."""
WATCHER_MAX_RETRY_S = 30.0
"""Longest wait between two checks while the registry cannot be read (unless woken)."""


class Watcher:
    """Background thread that calls :meth:`ModelHolder.refresh` every ``interval_s`` seconds
    (never, if 0) and at once whenever :meth:`wake` is called (a ``model-events`` message).

    A check that raises (the registry unreadable, a half-written ``state.json``) never stops
    the thread: it is logged once per failure streak, counted, and tried again after a wait
    that doubles from ``interval_s`` up to ``max_retry_s``.

    Parameters
    ----------
    holder : ModelHolder
        What the checks update.
    ref : str
        Version or alias to serve (``production``).
    interval_s : float
        Seconds between checks (0: only when woken).
    unready_after_checks : int
        The replica is not ready once the registry has failed to be read for this many
        intervals (0: the registry never makes it unready).
    max_retry_s : float
        Cap of the wait between checks while they fail.
    clock : callable
        Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        holder: ModelHolder,
        ref: str,
        interval_s: float,
        *,
        unready_after_checks: int = UNREADY_AFTER_CHECKS,
        max_retry_s: float = WATCHER_MAX_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.holder, self.ref, self.interval_s = holder, ref, interval_s
        self.unready_after_s = unready_after_checks * interval_s
        self.clock = clock
        self.streak = FailureStreak(
            "model-watcher",
            first_s=interval_s or 1.0,
            max_s=max_retry_s,
            then="still serving the loaded versions, checking again with backoff",
            logger=log,
            clock=clock,
        )
        self.last_good = clock()
        """When the last successful check began (start-up's load read the registry)."""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> None:
        self.last_good = self.clock()
        REGISTRY_CHECK_AGE.set_function(self.check_age_s)
        self._thread.start()

    def wake(self, _message: bytes | None = None) -> None:
        """Check the registry now instead of at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.interval_s + 5)

    def check(self) -> float | None:
        """Check the registry once; returns the wait before the next check (``None``: until woken)."""
        started = self.clock()
        try:
            self.holder.refresh(self.ref)
            self.holder.refresh_plan()
            self.holder.release_retired()
        except Exception as exc:  # any failure: keep serving what is loaded and try again
            return self.streak.failed(exc)
        self.last_good = started
        self.streak.succeeded()
        return self.interval_s or None

    def check_age_s(self) -> float:
        """Seconds since the last successful check began."""
        return max(self.clock() - self.last_good, 0.0)

    def ensure_readable(self) -> None:
        """Raise :class:`RegistryUnreadable` once the checks have failed for ``unready_after_checks``
        intervals in a row (the time since the last good check, while the latest one failed)."""
        if self.streak.failures == 0 or self.unready_after_s <= 0:
            return
        age = self.check_age_s()
        if age >= self.unready_after_s:
            raise RegistryUnreadable(
                f"the model registry has not been readable for {age:.0f} s "
                f"({self.streak.last_error}); still serving {self.holder.version_or_none}"
            )

    def _run(self) -> None:
        lower_this_threads_priority(LOADER_NICENESS)
        wait = self.interval_s or None
        while True:
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            wait = self.check()


def lower_this_threads_priority(niceness: int) -> None:
    """Make the calling thread (on Linux, not the whole process) yield the CPU to the others."""
    if sys.platform != "linux":  # elsewhere setpriority would apply to the whole process
        return
    me = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, me, min(os.getpriority(os.PRIO_PROCESS, me) + niceness, 19))
    except OSError as exc:  # not allowed here: it only costs latency during a swap
        log.debug("model watcher keeps its priority: %s", exc)


@dataclass(frozen=True)
class Rollout:
    """A rollout plan and the versions serving its treatment arms, published together."""

    plan: RolloutPlan = field(default_factory=RolloutPlan)
    treatments: Mapping[str, VersionRecommender] = field(default_factory=dict)


class ModelHolder:
    """Holds the current recommender; a failed load leaves the previous one serving.

    Requests read what serves without a lock: the current version, and the rollout plan with
    its treatment versions as one :class:`Rollout` replaced whole. Changes (:meth:`load`,
    :meth:`refresh`, :meth:`refresh_plan`, from the model watcher and the admin routes) run
    one at a time, so a version is never loaded twice at once; the lock that guards the
    shared state itself is held only to swap it, never while a version loads.
    """

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
        self._rollout = Rollout()
        self._failed_treatments: set[str] = set()
        self._retired: list[VersionRecommender] = []
        self._changing = threading.RLock()
        """One change at a time, loading included (requests never wait for it)."""
        self._lock = threading.Lock()
        """Held only to swap what serves and to hand over retired versions (no I/O)."""

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
        with self._changing:
            recommender = self._open(ref)
            with self._lock:
                previous, self._current = self._current, recommender
                if previous is not None:
                    self._retired.append(previous)
            was = previous.version if previous else None
            log.info("model %s serving (was %s) on %s", recommender.version, was, recommender.provider)
            return recommender

    def refresh(self, ref: str) -> bool:
        """Serve what ``ref`` resolves to now, if that changed; ``True`` when a new version was loaded.

        A version that fails to load is remembered and not retried until ``ref`` moves on, while
        the current model keeps serving. A registry that cannot be read raises (the caller retries).
        """
        try:
            target = self.registry.resolve(ref)
        except RecsysError:  # nothing by that name (yet): the registry itself was read
            return False
        with self._changing:
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
        """Load the treatment versions of a changed rollout plan, then switch to it atomically.

        Safe to call from several threads: calls run one after the other, and requests keep
        reading the previous plan and its versions until the new ones are all loaded.
        """
        with self._changing:
            plan = self.registry.rollout()
            serving = self._rollout
            if (
                plan.revision == serving.plan.revision
                and plan.versions() <= set(serving.treatments) | self._failed_treatments
            ):
                return False
            loaded = {v: r for v in sorted(plan.versions()) if (r := self._treatment(v, serving)) is not None}
            kept = {id(r) for r in loaded.values()}
            with self._lock:
                self._retired.extend(r for r in serving.treatments.values() if id(r) not in kept)
                self._rollout = Rollout(plan, loaded)
        log.info("rollout plan revision %d: %s", plan.revision, sorted(loaded))
        return True

    def _treatment(self, version: str, serving: Rollout) -> VersionRecommender | None:
        """The loaded version ``version`` (opened now if need be), ``None`` if it was refused."""
        existing = serving.treatments.get(version)
        if existing is None and self._current is not None and self._current.version == version:
            existing = self._current
        if existing is None and version not in self._failed_treatments:
            try:
                existing = self._open(version)
            except RecsysError as exc:
                self._failed_treatments.add(version)
                log.error("treatment %s refused; its users get production: %s", version, exc.message)
        return existing

    def release_retired(self, grace_s: float = RETIRE_AFTER_S) -> int:
        """Free versions that stopped serving, gently; returns how many were freed.

        Waits ``grace_s`` first, so requests that picked a version just before the switch
        finish with it. Called from the model watcher's thread: freeing a large version in
        one go (millions of ids) would stall the requests for a quarter of a second.
        """
        with self._lock:
            serving = {id(r) for r in (self._current, *self._rollout.treatments.values()) if r is not None}
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
        production, serving = self._current, self._rollout
        if production is None:
            raise ModelUnavailable("no verified model is loaded yet")
        assignment = assign(user_id=user_id, plan=serving.plan)
        if assignment.version is None:
            return production, assignment, None
        treatment = serving.treatments.get(assignment.version)
        if treatment is None or (assignment.interleaved and treatment.version == production.version):
            return production, Assignment(None, CONTROL), None
        return treatment, assignment, production if assignment.interleaved else None

    @property
    def plan(self) -> RolloutPlan:
        """The rollout plan being served."""
        return self._rollout.plan

    @property
    def treatments(self) -> Mapping[str, VersionRecommender]:
        """The versions serving the plan's treatment arms, by version."""
        return self._rollout.treatments

    def provider_of(self, version: str) -> str | None:
        """onnxruntime provider of a loaded version (None when not loaded)."""
        if self._current is not None and self._current.version == version:
            return self._current.provider
        treatment = self._rollout.treatments.get(version)
        return treatment.provider if treatment else None

    def loaded_versions(self) -> set[str]:
        return {v for v in (self.version_or_none, *self._rollout.treatments) if v}

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
