"""Sticky A/B assignment of users to the versions of a rollout plan (pure functions).

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
(:mod:`recsys.experiments.interleaving`), labelled ``NAME:interleave``; it has no control slice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from recsys.registry.plan import (
    CONTROL,
    CONTROL_SLICE_START,
    HOLDOUT,
    HOLDOUT_SALT,
    INTERLEAVE,
    INTERLEAVED,
    ExperimentMode,
    RolloutPlan,
)


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
