"""The file model registry: versions, stages and aliases, promotion and rollback.

Layout under the registry folder (``--registry``, ``RECSYS_REGISTRY``, default ``./models``)::

    versions/2.1/...      one folder per version (see :mod:`recsys.registry.artifacts`)
    state.json            stages, the production history, the rollout plan
    experiments.jsonl     every registry event, plan change and controller decision
                          (:mod:`recsys.registry.experiment_log`), appended one line each
    keys.json             the API's keys, hashed (:mod:`recsys.access.keys`)
    .staging/             versions being written; never read
    .lock                 serialises writers (``flock``)

A version becomes visible by one ``rename`` of its finished folder, and
``state.json`` is replaced atomically, so a crash mid-write leaves either the
old state or the new one, never half a version. Serving replicas poll ``state.json``
for production and the plan, so it holds nothing that grows with time; the record of
what happened lives in ``experiments.jsonl``, which reading production never touches.
A registry whose ``state.json`` still holds the former audit log (``log``) is migrated
on its first write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from recsys.errors import ModelNotFound, NothingToRollBack, PromotionRefused, VersionConflict
from recsys.events.schemas import ModelEvent, ModelEventKind
from recsys.registry.announcer import Announcer, deliver
from recsys.registry.artifacts import LoadedModel, load_version, read_manifest, verify
from recsys.registry.experiment_log import (
    DecisionRecord,
    ExperimentLog,
    HoldoutChange,
    PlanChange,
    Promoted,
    Record,
    Records,
    RecordT,
    Registered,
    RolledBack,
    StageSet,
    exclusive,
    experiment_of,
    from_legacy,
    fsync_dir,
    with_legacy,
)
from recsys.registry.gate import GateDecision, promotion_gate
from recsys.registry.manifest import Manifest, Stage
from recsys.registry.plan import Experiment, RolloutPlan
from recsys.registry.versioning import ALS_MAJOR, Version, next_version
from recsys.settings import DEFAULT_REGISTRY

VERSIONS, STAGING, STATE = "versions", ".staging", "state.json"
LEGACY_LOG = "log"
"""The key of the former audit log in ``state.json`` (migrated to records on the first write)."""
log = logging.getLogger(__name__)

VersionWriter = Callable[[Path, str], Manifest]
"""Writes a version's files into the given folder for the given version number."""


@dataclass
class VersionInfo:
    """One row of ``recsys models list``."""

    version: str
    stage: Stage
    created_at: datetime
    parent_version: str | None
    metrics: dict[str, float]
    device: str


class FileRegistry:
    """Model versions in a folder on a local or shared file system.

    Parameters
    ----------
    root : Path
        Registry folder; created on first write.
    announce : Announcer, optional
        Called with a :class:`~recsys.events.schemas.ModelEvent` after each committed change
        (see :mod:`recsys.registry.announcer`); a failure to announce never undoes the change.
    """

    def __init__(self, root: Path = DEFAULT_REGISTRY, *, announce: Announcer | None = None) -> None:
        self.root = Path(root)
        self.announce = announce
        self._log = ExperimentLog(self.root)

    def _announce(
        self, kind: ModelEventKind, version: str | None, **detail: str | float | int | None
    ) -> None:
        deliver(self.announce, ModelEvent(kind=kind, version=version, detail=detail))

    # -- reading -------------------------------------------------------------------------

    def versions(self) -> list[Version]:
        """Registered versions, oldest first (folders being written are never listed)."""
        folder = self.root / VERSIONS
        if not folder.is_dir():
            return []
        return sorted(Version.parse(p.name) for p in folder.iterdir() if Version.is_version(p.name))

    def state(self) -> dict[str, Any]:
        """Stages, production history and the rollout plan (``rollout``, when one was set).

        What happened over time is in :meth:`records`, not here.
        """
        data = self._raw_state()
        data.pop(LEGACY_LOG, None)
        return data

    def _raw_state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.root / STATE).read_text())
        except FileNotFoundError:
            data = {}
        data.setdefault("stages", {})
        data.setdefault("production_history", [])
        return data

    def records(self, *, experiments: Collection[str] | None = None) -> Records:
        """Every registry event, plan change and controller decision, oldest first, with the
        lines that could not be read (reported and skipped, never raised).

        Parameters
        ----------
        experiments : collection of str, optional
            Only the plan changes and decisions of these experiments (faster in a long file).

        A registry not yet migrated has its former audit log read as records (nothing is written).
        """
        return self._with_legacy(self._log.read(experiments=experiments), experiments)

    def latest_records(self, count: int) -> Records:
        """The last ``count`` records, oldest first (the file is read from its end)."""
        found = self._with_legacy(self._log.tail(count), None)
        found.records = found.records[-count:] if count > 0 else []
        return found

    def decisions(self, experiment: str) -> list[DecisionRecord]:
        """The rollout controller's decisions on ``experiment``, oldest first (every run of the name)."""
        return [r for r in self.records(experiments=[experiment]).records if isinstance(r, DecisionRecord)]

    def experiment_names(self) -> list[str]:
        """Every experiment the records mention, in order of first appearance."""
        names = dict.fromkeys(_experiments_in(self._legacy_records().records))
        names |= dict.fromkeys(self._log.experiment_names())
        return list(names)

    def _legacy_records(self) -> Records:
        entries = self._raw_state().get(LEGACY_LOG)
        return from_legacy(entries) if isinstance(entries, list) else Records()

    def _with_legacy(self, found: Records, experiments: Collection[str] | None) -> Records:
        legacy = self._legacy_records()
        if experiments is not None:
            legacy.records = [r for r in legacy.records if experiment_of(r) in experiments]
        return with_legacy(found, legacy)

    def stage(self, version: str) -> Stage:
        return Stage(self.state()["stages"].get(version, Stage.CANDIDATE.value))

    def production(self) -> str | None:
        history = self.state()["production_history"]
        return str(history[-1]) if history else None

    def resolve(self, ref: str) -> str:
        """A version number for ``production``, ``candidate``, ``latest`` or ``MAJOR.MINOR``."""
        versions = self.versions()
        if ref == "production":
            found = self.production()
        elif ref == "latest":
            found = str(versions[-1]) if versions else None
        elif ref == "candidate":
            stages = self.state()["stages"]
            candidates = [v for v in versions if stages.get(str(v), "candidate") == "candidate"]
            found = str(candidates[-1]) if candidates else None
        else:
            found = str(Version.parse(ref)) if Version.parse(ref) in versions else None
        if found is None:
            raise ModelNotFound(f"no model {ref!r} in registry {self.root}")
        return found

    def folder(self, ref: str) -> Path:
        return self.root / VERSIONS / self.resolve(ref)

    def manifest(self, ref: str) -> Manifest:
        return read_manifest(self.folder(ref))

    def verify(self, ref: str) -> Manifest:
        """Check a version's checksums."""
        return verify(self.folder(ref))

    def load(self, ref: str, *, max_bytes_per_s: float | None = None) -> LoadedModel:
        """Load and verify a version for scoring (verification paced to ``max_bytes_per_s`` if given)."""
        return load_version(self.folder(ref), max_bytes_per_s=max_bytes_per_s)

    def list(self) -> list[VersionInfo]:
        """Every version with its stage and headline metrics."""
        stages = self.state()["stages"]
        infos = []
        for version in self.versions():
            manifest = read_manifest(self.root / VERSIONS / str(version))
            own = manifest.metrics.get("methods", {}).get(manifest.algorithm, {})
            infos.append(
                VersionInfo(
                    str(version),
                    Stage(stages.get(str(version), "candidate")),
                    manifest.created_at,
                    manifest.parent_version,
                    own,
                    manifest.device,
                )
            )
        return infos

    # -- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with exclusive(self.root):
            yield

    def register(
        self, writer: VersionWriter, *, major: int = ALS_MAJOR, version: str | None = None
    ) -> Manifest:
        """Allocate the next version, let ``writer`` fill a staging folder, then publish it atomically.

        If ``writer`` raises, the staging folder is removed and nothing is registered.
        """
        with self._locked():
            # writers hold the lock, so whatever is in staging now was left by a killed writer
            for stale in (self.root / STAGING).glob("*"):
                shutil.rmtree(stale, ignore_errors=True)
            existing = self.versions()
            number = Version.parse(version) if version else next_version(existing, major=major)
            target = self.root / VERSIONS / str(number)
            if number in existing or target.exists():
                raise VersionConflict(f"version {number} already exists in {self.root}")
            staging = self.root / STAGING / f"{number}-{uuid.uuid4().hex[:8]}"
            try:
                manifest = writer(staging, str(number))
                if read_manifest(staging).version != str(number):
                    raise VersionConflict(f"writer produced a manifest for another version than {number}")
                fsync_dir(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging, target)
                fsync_dir(target.parent)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self._commit(None, Registered(version=str(number), parent=manifest.parent_version))
        self._announce(ModelEventKind.REGISTERED, str(number), parent=manifest.parent_version)
        return manifest

    def _commit(
        self, change: Callable[[dict[str, Any]], None] | None, *records: RecordT
    ) -> Sequence[RecordT]:
        """Under the lock: migrate a former audit log, apply ``change`` to ``state.json``, then
        append ``records``; returns them with their sequence numbers."""
        state = self._raw_state()
        legacy = state.pop(LEGACY_LOG, None)
        if legacy is not None:
            migrated = self._log.migrate_locked(legacy if isinstance(legacy, list) else [])
            log.info(
                "registry %s: %d audit log entries moved to %s (%d unreadable)",
                self.root,
                len(migrated.records),
                self._log.path.name,
                len(migrated.problems),
            )
        if change is not None:
            change(state)
        if change is not None or legacy is not None:
            self._write_state(state)
        return self._log.append_locked(records)

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.root / f".{STATE}.{uuid.uuid4().hex[:8]}"
        with tmp.open("w") as fh:
            json.dump(state, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / STATE)
        fsync_dir(self.root)

    def check_promotion(self, ref: str, *, tolerance: float = 0.0) -> GateDecision:
        """What the promotion gate says about ``ref`` against current production."""
        candidate = self.manifest(ref)
        production = self.production()
        current = self.manifest(production) if production and production != candidate.version else None
        return promotion_gate(candidate, current, tolerance=tolerance)

    def promote(self, ref: str, *, force: bool = False) -> GateDecision:
        """Make a version production (the previous one is archived); the gate must agree unless forced."""
        with self._locked():
            version = self.resolve(ref)
            verify(self.root / VERSIONS / version)
            decision = self.check_promotion(version)
            if not decision.allowed and not force:
                raise PromotionRefused(f"promotion of {version} refused: " + "; ".join(decision.reasons))

            def change(state: dict[str, Any]) -> None:
                history = state["production_history"]
                if history:
                    state["stages"][history[-1]] = Stage.ARCHIVED.value
                if not history or history[-1] != version:
                    history.append(version)
                state["stages"][version] = Stage.PRODUCTION.value

            self._commit(change, Promoted(version=version, forced=force and not decision.allowed))
        self._announce(ModelEventKind.PROMOTED, version, forced=int(force and not decision.allowed))
        return decision

    def rollback(self) -> str:
        """Return production to the previous production version; the current one is archived."""
        with self._locked():
            state = self.state()
            history = [v for v in state["production_history"] if (self.root / VERSIONS / v).is_dir()]
            if len(history) < 2:
                raise NothingToRollBack("no earlier production version to roll back to")
            current, previous = str(history[-1]), str(history[-2])
            verify(self.root / VERSIONS / previous)

            def change(s: dict[str, Any]) -> None:
                s["production_history"] = history[:-1]
                s["stages"][current] = Stage.ARCHIVED.value
                s["stages"][previous] = Stage.PRODUCTION.value

            self._commit(change, RolledBack(version=previous, from_version=current))
        self._announce(ModelEventKind.ROLLED_BACK, previous, rolled_back=current)
        return previous

    def rollout(self) -> RolloutPlan:
        """The rollout plan every replica serves (empty when none was set)."""
        return RolloutPlan.model_validate(self.state().get("rollout", {}))

    def set_experiment(self, experiment: Experiment) -> RolloutPlan:
        """Add or change an experiment; its treatment must be a registered, intact version."""
        with self._locked():
            version = self.resolve(experiment.treatment)
            verify(self.root / VERSIONS / version)
            plan = self.rollout().upsert(experiment)

            def change(s: dict[str, Any]) -> None:
                s["rollout"] = plan.model_dump(mode="json")

            self._commit(
                change,
                PlanChange(
                    experiment=experiment.name,
                    treatment=version,
                    share=experiment.share,
                    paused=experiment.paused,
                    mode=experiment.mode.value,
                ),
            )
        self._announce(
            ModelEventKind.ROLLOUT_CHANGED,
            version,
            experiment=experiment.name,
            share=experiment.share,
            revision=plan.revision,
        )
        return plan

    def stop_experiment(self, name: str) -> RolloutPlan:
        """Remove an experiment: its users go back to production."""
        with self._locked():
            current = self.rollout()
            plan = current.remove(name)
            treatment = next(e.treatment for e in current.experiments if e.name == name)

            def change(s: dict[str, Any]) -> None:
                s["rollout"] = plan.model_dump(mode="json")

            self._commit(change, PlanChange(experiment=name, treatment=treatment, stopped=True))
        self._announce(
            ModelEventKind.ROLLOUT_CHANGED, None, experiment=name, share=0.0, revision=plan.revision
        )
        return plan

    def set_holdout(self, share: float) -> RolloutPlan:
        """Hold ``share`` of users out of personalisation (popular tracks; 0 ends it)."""
        with self._locked():
            plan = self.rollout().with_holdout(share)

            def change(s: dict[str, Any]) -> None:
                s["rollout"] = plan.model_dump(mode="json")

            self._commit(change, HoldoutChange(share=share))
        self._announce(ModelEventKind.ROLLOUT_CHANGED, None, holdout=share, revision=plan.revision)
        return plan

    def record_decision(self, decision: DecisionRecord) -> DecisionRecord:
        """Append a rollout controller decision, with its numbers, to the records, and announce it.

        Returns the decision as stored (with its sequence number). ``state.json`` is not rewritten.
        """
        with self._locked():
            (stored,) = self._commit(None, decision)
        self._announce(ModelEventKind.ROLLOUT_DECISION, decision.treatment, **decision.event_detail())
        return stored

    def set_stage(self, ref: str, stage: Stage) -> None:
        """Mark a non-production version ``candidate`` or ``archived`` (use promote for production)."""
        if stage is Stage.PRODUCTION:
            raise PromotionRefused("use promote to make a version production")
        with self._locked():
            version = self.resolve(ref)
            if version == self.production():
                raise PromotionRefused(f"{version} is production; promote another version or roll back first")

            def change(s: dict[str, Any]) -> None:
                s["stages"][version] = stage.value

            self._commit(change, StageSet(version=version, stage=stage.value))


def _experiments_in(records: Collection[Record]) -> list[str]:
    return [name for r in records if (name := experiment_of(r)) is not None]
