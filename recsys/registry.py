"""The file model registry: versions, stages and aliases, promotion and rollback.

Layout under the registry folder (``--registry``, ``RECSYS_REGISTRY``, default ``./models``)::

    versions/2.1/...      one folder per version (see :mod:`recsys.artifacts`)
    state.json            stages, the production history, the audit log
    .staging/             versions being written; never read
    .lock                 serialises writers (``flock``)

A version becomes visible by one ``rename`` of its finished folder, and
``state.json`` is replaced atomically, so a crash mid-write leaves either the
old state or the new one, never half a version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.announce import Announcer, deliver
from recsys.artifacts import LoadedModel, load_version, read_manifest, verify
from recsys.errors import ModelNotFound, NothingToRollBack, PromotionRefused, VersionConflict
from recsys.events import ModelEvent, ModelEventKind
from recsys.gate import GateDecision, promotion_gate
from recsys.manifest import Manifest, Stage
from recsys.rollout import Experiment, RolloutPlan
from recsys.versioning import ALS_MAJOR, Version, next_version

DEFAULT_REGISTRY = Path("models")
VERSIONS, STAGING, STATE, LOCK = "versions", ".staging", "state.json", ".lock"
ALIASES = ("production", "candidate", "latest")

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
        Called with a :class:`~recsys.events.ModelEvent` after each committed change
        (see :mod:`recsys.announce`); a failure to announce never undoes the change.
    """

    def __init__(self, root: Path = DEFAULT_REGISTRY, *, announce: Announcer | None = None) -> None:
        self.root = Path(root)
        self.announce = announce

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
        """Stages, production history and audit log."""
        try:
            data: dict[str, Any] = json.loads((self.root / STATE).read_text())
        except FileNotFoundError:
            data = {}
        data.setdefault("stages", {})
        data.setdefault("production_history", [])
        data.setdefault("log", [])
        return data

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
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK).open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

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
                _fsync_dir(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging, target)
                _fsync_dir(target.parent)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self._update_state(lambda s: _log(s, "registered", str(number)))
        self._announce(ModelEventKind.REGISTERED, str(number), parent=manifest.parent_version)
        return manifest

    def _update_state(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        state = self.state()
        change(state)
        tmp = self.root / f".{STATE}.{uuid.uuid4().hex[:8]}"
        with tmp.open("w") as fh:
            json.dump(state, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / STATE)
        _fsync_dir(self.root)
        return state

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
                _log(
                    state,
                    "promoted" + (" (forced)" if force and not decision.allowed else ""),
                    version,
                )

            self._update_state(change)
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
                _log(s, f"rolled back from {current}", previous)

            self._update_state(change)
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
                _log(s, f"rollout {experiment.name}: share {experiment.share:g}", version)

            self._update_state(change)
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
            plan = self.rollout().remove(name)

            def change(s: dict[str, Any]) -> None:
                s["rollout"] = plan.model_dump(mode="json")
                _log(s, f"rollout {name}: stopped", "-")

            self._update_state(change)
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
                _log(s, f"holdout: share {share:g}", "-")

            self._update_state(change)
        self._announce(ModelEventKind.ROLLOUT_CHANGED, None, holdout=share, revision=plan.revision)
        return plan

    def record_decision(self, experiment: str, version: str, action: str, detail: dict[str, Any]) -> None:
        """Append a rollout controller decision, with its numbers, to the audit log, and announce it."""
        with self._locked():

            def change(s: dict[str, Any]) -> None:
                _log(s, f"rollout {experiment}: {action}", version)
                s["log"][-1]["detail"] = detail

            self._update_state(change)
        numbers = {k: v for k, v in detail.items() if isinstance(v, str | int | float) or v is None}
        self._announce(
            ModelEventKind.ROLLOUT_DECISION, version, experiment=experiment, action=action, **numbers
        )

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
                _log(s, f"stage {stage.value}", version)

            self._update_state(change)


def _log(state: dict[str, Any], action: str, version: str) -> None:
    state["log"].append({"at": datetime.now(UTC).isoformat(), "action": action, "version": version})


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
