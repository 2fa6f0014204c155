"""Rollout plans: the experiments that run, their shares and modes, and the holdout.

The plan is data the registry stores (``plan.json``); who gets which version under it is
:mod:`recsys.experiments.assignment`. A plan lists experiments; each sends a share of users to
a treatment version, the rest to production (control). A plan may also hold a share of users
out of personalisation altogether (``holdout``). An experiment in ``interleave`` mode (the
rollout's optional first rung) gives each user in its share one list merged from the
treatment's and production's by team draft (:mod:`recsys.experiments.interleaving`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator

from recsys.errors import InvalidRequest
from recsys.registry.versioning import Version

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
