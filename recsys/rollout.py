"""Rollout plans and sticky A/B assignment of users to model versions (pure functions).

A plan lists experiments; each sends a share of users to a treatment version, the rest to
production (control). A user's bucket is a salted hash of ``user_id``: the same on every
request and every replica, and independent between experiments with different salts.
A user is in an experiment's treatment when their bucket is below its share, so growing
a share (1% → 2% → 5% → 10% → 50% → 100%) only adds users: nobody already in treatment
goes back. Each experiment also labels an equal-sized slice of production users as its
control group. When several experiments would take the same user, the first in the plan
wins, arm and control slice alike: each experiment draws both of its arms from the users
no earlier experiment took, so with ten experiments at once every one of them still has
two arms of equal expected size (which the sample-ratio check relies on). A plan may also
hold a share of users out of personalisation altogether (``holdout``).

An experiment in ``interleave`` mode (the rollout's optional first rung) gives each user in its
share one list merged from the treatment's and production's by team draft
(:mod:`recsys.interleaving`), labelled ``NAME:interleave``; it has no control slice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator

from recsys.errors import InvalidRequest
from recsys.versioning import Version

STAGES = (0.01, 0.02, 0.05, 0.10, 0.50, 1.00)
"""The usual ramp of a treatment's share."""
CONTROL = "control"
CONTROL_SLICE_START = 0.5
HOLDOUT = "holdout"
"""The variant of users who get the most popular tracks instead of personalised ones."""
HOLDOUT_SALT = "holdout"
MAX_HOLDOUT = 0.5
INTERLEAVE = "interleave"
INTERLEAVED = f":{INTERLEAVE}"
"""How the variant of users in an interleaving experiment ends (``NAME:interleave``)."""


class ExperimentMode(StrEnum):
    """How an experiment compares its treatment with production."""

    AB = "ab"
    """Treatment and a control slice of equal size, each served by one version (A/B test)."""
    INTERLEAVE = INTERLEAVE
    """Each user gets one list merged from both versions (team-draft interleaving)."""


class Experiment(BaseModel):
    """One treatment version tried on a share of users."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    treatment: str
    share: float = Field(ge=0.0, le=1.0)
    salt: str = ""
    """Hash salt; defaults to the name, so experiments are independent."""
    mode: ExperimentMode = Field(
        default=ExperimentMode.AB,
        description="ab: an A/B test (treatment and a control slice of equal size). interleave: each "
        "user in the share gets one list merged from the treatment's and production's (the first "
        "rung, before A/B at 1%).",
    )
    paused: bool = False
    step_started: datetime | None = None
    """When the current share was set (the rollout controller holds each step a minimum time)."""

    @field_validator("treatment")
    @classmethod
    def _is_version(cls, value: str) -> str:
        return str(Version.parse(value))

    @property
    def effective_salt(self) -> str:
        return self.salt or self.name


class RolloutPlan(BaseModel):
    """All running experiments; ``revision`` increases with every change."""

    experiments: list[Experiment] = Field(default_factory=list)
    holdout: float = Field(default=0.0, ge=0.0, le=MAX_HOLDOUT)
    """Share of users held out of personalisation: they get popular tracks (variant ``holdout``),
    which measures what the widget itself is worth. They are in no experiment."""
    revision: int = 0
    updated_at: datetime | None = None

    def upsert(self, experiment: Experiment) -> RolloutPlan:
        """A new plan with ``experiment`` added or replaced (by name); a new share or mode starts a
        new step (``step_started``), an unchanged one keeps its start."""
        now = datetime.now(UTC)
        previous = next((e for e in self.experiments if e.name == experiment.name), None)
        same_step = (
            previous is not None
            and previous.share == experiment.share
            and previous.mode == experiment.mode
            and previous.step_started
        )
        experiment = experiment.model_copy(
            update={"step_started": previous.step_started if same_step and previous else now}
        )
        others = [e for e in self.experiments if e.name != experiment.name]
        position = next((i for i, e in enumerate(self.experiments) if e.name == experiment.name), len(others))
        others.insert(position, experiment)
        return RolloutPlan(
            experiments=others, holdout=self.holdout, revision=self.revision + 1, updated_at=now
        )

    def remove(self, name: str) -> RolloutPlan:
        """A new plan without experiment ``name``."""
        if all(e.name != name for e in self.experiments):
            raise InvalidRequest(f"no experiment named {name!r}")
        kept = [e for e in self.experiments if e.name != name]
        return RolloutPlan(
            experiments=kept, holdout=self.holdout, revision=self.revision + 1, updated_at=datetime.now(UTC)
        )

    def with_holdout(self, share: float) -> RolloutPlan:
        """A new plan holding ``share`` of users out of personalisation (0 ends the holdout)."""
        return RolloutPlan(
            experiments=self.experiments,
            holdout=share,
            revision=self.revision + 1,
            updated_at=datetime.now(UTC),
        )

    def versions(self) -> set[str]:
        """Treatment versions that must be loaded to serve this plan."""
        return {e.treatment for e in self.experiments if e.share > 0 and not e.paused}


@dataclass(frozen=True)
class Assignment:
    """Which version answers a user, and the label recorded with the answer."""

    version: str | None
    """``None`` means production."""
    variant: str
    experiment: str | None = None

    @property
    def interleaved(self) -> bool:
        """``version`` and production answer together, their lists merged by team draft
        (variant ``NAME:interleave``)."""
        return self.variant.endswith(INTERLEAVED)


def bucket(user_id: str, salt: str) -> float:
    """A user's position in [0, 1) for one salt: uniform, stable, independent across salts."""
    digest = hashlib.sha256(f"{salt}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(*, user_id: str, plan: RolloutPlan) -> Assignment:
    """The version and variant for ``user_id`` under ``plan``.

    Production users in an experiment's control slice are labelled ``NAME:control``: a
    slice of the same size as the treatment (``[0.5, 0.5 + share)`` of the bucket range,
    the rest of it once the share passes one half), so the comparison is between two
    groups of equal size drawn the same way, over the same period. Users in the plan's
    holdout (a salt of its own) come first and are in no experiment. Experiments take users
    in plan order, each its treatment and its control slice. Users in an interleaving
    experiment's share get ``NAME:interleave``, its treatment and production together; such an
    experiment has no control slice.
    """
    if plan.holdout > 0 and bucket(user_id, HOLDOUT_SALT) < plan.holdout:
        return Assignment(None, HOLDOUT)
    for experiment in (e for e in plan.experiments if not e.paused and e.share > 0):
        position = bucket(user_id, experiment.effective_salt)
        if position < experiment.share:
            if experiment.mode == ExperimentMode.INTERLEAVE:
                variant = f"{experiment.name}:{INTERLEAVE}"
                return Assignment(experiment.treatment, variant, experiment.name)
            return Assignment(experiment.treatment, f"{experiment.name}:treatment", experiment.name)
        if experiment.mode == ExperimentMode.AB and in_control_slice(position, experiment.share):
            return Assignment(None, f"{experiment.name}:control", experiment.name)
    return Assignment(None, CONTROL)


def in_control_slice(position: float, share: float) -> bool:
    """Whether a bucket position is in the control slice of an experiment at ``share``."""
    start = max(CONTROL_SLICE_START, share)
    return start <= position < start + min(share, 1.0 - start)
