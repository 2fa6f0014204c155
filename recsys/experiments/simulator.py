"""A parametric simulator of one staged rollout, judged by the real controller at its real pace.

Users arrive at random (Poisson per minute); the treatment and its control slice each get
the share of them the rollout plan gives (:func:`arm_rates`). Each user has one session when
they arrive: a number of plays, each heard to the end or skipped after a few seconds, some
hated or loved, with each user's completion and hate probabilities drawn around their arm's
(:class:`ArmModel`), so users differ as real ones do. Their per-user totals are summed into
each arm's counters exactly as the stream worker's :func:`recsys.experiments.aggregates.add_to_arm` would
produce them (:func:`arm_counters`), and the controller (:func:`recsys.experiments.controller.decide`)
looks every ``look_every`` minutes, advancing, holding, rolling back or promoting
(:func:`simulate`). Run over many seeds, it measures how often the controller rolls back an
equal treatment, catches a harmful one early and promotes a better one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum

import numpy as np

from recsys.errors import InvalidRequest
from recsys.events.schemas import FeedbackEvent
from recsys.events.weights import DEFAULT_TRACK_MS, FeedbackType
from recsys.experiments.aggregates import ARM_COUNTERS, PRODUCTS, SCALE, USER_TOTALS, total
from recsys.experiments.analysis import ArmMetrics
from recsys.experiments.controller import Action, Decision, Guardrails, decide
from recsys.registry.plan import CONTROL_SLICE_START, STAGES, Experiment

TRACK_MS = DEFAULT_TRACK_MS
"""Listening of a play heard to the end (210 s)."""
SKIP_MS = (2_000, 30_000)
"""A skipped play is heard for a whole number of milliseconds in this range (both ends included)."""
MEAN_SKIP_MS = sum(SKIP_MS) / 2
EARLY_SHARE = STAGES[2]
"""A harmful treatment should be rolled back before it reaches this share (5%)."""
SESSION_TOTALS = (*USER_TOTALS, "completes", "events")
"""What is drawn per user: the stream worker's per-user totals, and their complete plays and events."""
DEFAULT_MAX_MINUTES = 24 * 60
SIMULATED_VERSION = "2.1"


@dataclass(frozen=True)
class ArmModel:
    """How the users of one arm behave in their one session."""

    mean_plays: float = 9.0
    """Plays per session are ``1 + Poisson(mean_plays)``."""
    complete: float = 0.5
    """Mean chance that a play is heard to the end (else skipped after 2-30 s)."""
    hate_rate: float = 0.03
    """Mean chance that a play is hated."""
    love_rate: float = 0.02
    """Chance that a play is loved (the same for every user)."""
    concentration: float | None = 10.0
    """Each user's completion and hate chances are drawn from a Beta distribution around the
    arm's means with this concentration (``a + b``; smaller: users differ more); ``None``: every
    user has the arm's means."""

    @property
    def listen_s_per_user(self) -> float:
        """Expected listening seconds per user."""
        per_play = self.complete * TRACK_MS + (1.0 - self.complete) * MEAN_SKIP_MS
        return (1.0 + self.mean_plays) * per_play / 1000.0

    def with_listening_gain(self, gain: float) -> ArmModel:
        """The same users, with plays heard to the end more often so that expected listening
        per user is ``1 + gain`` times this arm's.

        Raises
        ------
        InvalidRequest
            When no completion chance in 0..1 gives that much.
        """
        per_play = self.complete * TRACK_MS + (1.0 - self.complete) * MEAN_SKIP_MS
        complete = ((1.0 + gain) * per_play - MEAN_SKIP_MS) / (TRACK_MS - MEAN_SKIP_MS)
        if not 0.0 <= complete <= 1.0:
            raise InvalidRequest(
                f"a listening gain of {gain:+.1%} needs a completion chance of {complete:.3f}"
            )
        return replace(self, complete=complete)


@dataclass(frozen=True)
class Sessions:
    """Some users' sessions: their totals, and how long each of their skips was heard."""

    totals: dict[str, np.ndarray]
    """:data:`SESSION_TOTALS` -> one integer per user."""
    skip_ms: np.ndarray
    """Each skip's listening (ms), the first user's skips first."""

    @property
    def users(self) -> int:
        return len(self.totals["plays"])


def user_chances(mean: float, concentration: float | None, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` users' own chances around ``mean``: Beta with ``concentration``, or all ``mean``."""
    if concentration is None or mean <= 0.0 or mean >= 1.0:
        return np.full(n, mean)
    return rng.beta(mean * concentration, (1.0 - mean) * concentration, n)


def draw_sessions(model: ArmModel, n: int, rng: np.random.Generator) -> Sessions:
    """The sessions of ``n`` new users of an arm."""
    plays = 1 + rng.poisson(model.mean_plays, n)
    completes = rng.binomial(plays, user_chances(model.complete, model.concentration, n, rng))
    hates = rng.binomial(plays, user_chances(model.hate_rate, model.concentration, n, rng))
    loves = rng.binomial(plays, model.love_rate)
    skips = plays - completes
    skip_ms = rng.integers(SKIP_MS[0], SKIP_MS[1], size=int(skips.sum()), endpoint=True)
    owner = np.repeat(np.arange(n), skips)
    skipped_ms = np.bincount(owner, weights=skip_ms, minlength=n).astype(np.int64)
    totals = {
        "listen_ms": completes * TRACK_MS + skipped_ms,
        "plays": plays,
        "skips": skips,
        "loves": loves,
        "hates": hates,
        "completes": completes,
        "events": plays + hates + loves,
    }
    return Sessions({name: totals[name] for name in SESSION_TOTALS}, skip_ms)


def arm_counters(sessions: Sessions) -> dict[str, float]:
    """The counters an arm holds after these users' events (:data:`.aggregates.ARM_COUNTERS`),
    as the stream worker's :func:`~recsys.experiments.aggregates.add_to_arm` builds them, whatever the order
    of the events."""
    totals = sessions.totals
    sums: dict[str, float] = {"users": sessions.users}
    sums.update({name: int(values.sum()) for name, values in totals.items()})
    for name, (a, b) in PRODUCTS.items():
        sums[name] = float(np.dot(_scaled(totals, a), _scaled(totals, b)))
    return {name: sums[name] for name in ARM_COUNTERS}


def _scaled(totals: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    return np.asarray(totals[name], dtype=np.float64) / SCALE.get(name, 1.0)


def session_events(sessions: Sessions, user: int, *, user_id: str) -> list[FeedbackEvent]:
    """The feedback events of one user's session, as the stream worker would receive them:
    a ``complete`` per play heard to the end, a ``skip`` per skipped play, a ``hate`` and a
    ``love`` per play hated or loved."""
    totals = {name: int(values[user]) for name, values in sessions.totals.items()}
    first_skip = int(sessions.totals["skips"][:user].sum())
    skips = sessions.skip_ms[first_skip : first_skip + totals["skips"]]
    listened = [TRACK_MS] * totals["completes"] + [int(ms) for ms in skips]
    kinds = [FeedbackType.COMPLETE] * totals["completes"] + [FeedbackType.SKIP] * totals["skips"]
    events = [
        FeedbackEvent(user_id=user_id, track_id=f"t{i}", type=kind, listen_ms=ms)
        for i, (kind, ms) in enumerate(zip(kinds, listened, strict=True))
    ]
    for kind in (FeedbackType.HATE, FeedbackType.LOVE):
        count = totals[f"{kind.value}s"]
        events += [FeedbackEvent(user_id=user_id, track_id=f"t{i}", type=kind) for i in range(count)]
    return events


def control_share(share: float) -> float:
    """The size of the control slice at ``share``: as large as the treatment while it fits in
    the upper half of the bucket range, the rest of it beyond one half, none at 100%
    (:func:`recsys.experiments.assignment.in_control_slice`)."""
    return max(0.0, min(share, 1.0 - max(CONTROL_SLICE_START, share)))


def arm_rates(arrivals: float, share: float) -> tuple[float, float]:
    """New users per minute in the treatment and its control slice, of ``arrivals`` in all."""
    return arrivals * share, arrivals * control_share(share)


def arrivals_for(start_users: float, *, look_every: int = 1) -> float:
    """Users per minute in all such that the first look sees about ``start_users`` per arm at
    the first stage (1%)."""
    return start_users / (STAGES[0] * look_every)


@dataclass(frozen=True)
class Rollout:
    """One experiment to simulate: its arms, its traffic and the controller's settings."""

    treatment: ArmModel
    control: ArmModel
    arrivals: float
    """New users per minute in all (every user, in the experiment or not)."""
    guardrails: Guardrails
    look_every: int = 1
    """Minutes between the controller's looks."""
    max_minutes: int = DEFAULT_MAX_MINUTES
    """The run stops here if the experiment has not ended."""


class Outcome(StrEnum):
    ROLLED_BACK = "rolled back"
    PROMOTED = "promoted"
    RUNNING = "running"


@dataclass(frozen=True)
class RunResult:
    """How one simulated experiment ended."""

    seed: int
    outcome: Outcome
    minute: int
    """When it ended (or ``max_minutes`` for a run still going)."""
    share: float
    """The treatment's share when it ended (before a rollback took it to 0)."""
    reasons: tuple[str, ...]
    """The reasons of the last decision."""
    first_look_users: tuple[int, int]
    """Treatment and control users at the first look."""
    looks: int

    @property
    def rolled_back(self) -> bool:
        return self.outcome is Outcome.ROLLED_BACK

    @property
    def rolled_back_early(self) -> bool:
        """Rolled back before reaching :data:`EARLY_SHARE` (the experiment ends at its first rollback)."""
        return self.rolled_back and self.share < EARLY_SHARE - 1e-12


ENDINGS = {Action.ROLLBACK: Outcome.ROLLED_BACK, Action.COMPLETE: Outcome.PROMOTED}


def simulate(rollout: Rollout, *, seed: int) -> RunResult:
    """Run one experiment from 1% until it is rolled back, promoted, or ``max_minutes`` pass.

    Every minute the users who arrive join the treatment or its control slice at the current
    share; every ``look_every`` minutes the controller decides with both arms' counters since
    the start and the age of the current step. On an advance the new share starts a new step.
    """
    if rollout.look_every < 1 or rollout.max_minutes < rollout.look_every:
        raise InvalidRequest("look_every must be at least 1 minute and at most max_minutes")
    rng = np.random.default_rng(seed)
    experiment = Experiment(name="simulated", treatment=SIMULATED_VERSION, share=STAGES[0])
    counters: dict[str, dict[str, float]] = {"treatment": {}, "control": {}}
    step_start, looks, first_look = 0, 0, (0, 0)
    decision: Decision | None = None
    for minute in range(1, rollout.max_minutes + 1):
        _arrive(rollout, experiment.share, counters, rng)
        if minute % rollout.look_every:
            continue
        treatment, control = (ArmMetrics.from_counters(counters[arm]) for arm in ("treatment", "control"))
        looks += 1
        if looks == 1:
            first_look = (treatment.users, control.users)
        decision = decide(
            experiment=experiment,
            treatment=treatment,
            control=control,
            step_age=timedelta(minutes=minute - step_start),
            guardrails=rollout.guardrails,
        )
        if decision.action in ENDINGS:
            ended = ENDINGS[decision.action]
            return RunResult(
                seed, ended, minute, experiment.share, tuple(decision.reasons), first_look, looks
            )
        if decision.action is Action.ADVANCE:
            experiment = experiment.model_copy(update={"share": decision.share})
            step_start = minute
    reasons = tuple(decision.reasons) if decision else ()
    return RunResult(seed, Outcome.RUNNING, rollout.max_minutes, experiment.share, reasons, first_look, looks)


def _arrive(
    rollout: Rollout, share: float, counters: dict[str, dict[str, float]], rng: np.random.Generator
) -> None:
    """One minute's new users of both arms, added to their counters."""
    rates = arm_rates(rollout.arrivals, share)
    for arm, model, rate in zip(
        ("treatment", "control"), (rollout.treatment, rollout.control), rates, strict=True
    ):
        n = int(rng.poisson(rate)) if rate > 0 else 0
        if n:
            counters[arm] = total([counters[arm], arm_counters(draw_sessions(model, n, rng))])
