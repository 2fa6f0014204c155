"""The rollout controller's decision: advance, hold, roll back or complete an experiment.

Pure: given an experiment, its two arms' counters (:mod:`recsys.analysis`), how long the
current step has run, and the guardrails, it returns what to do and every reason, with
the numbers. ``recsys rollout advance`` applies the decision to the registry, which
records it in the audit log and announces it on ``model-events``.

Order of the checks: a broken assignment (sample-ratio mismatch) holds everything, since
no comparison can be trusted; then the guardrails (hate rate, listening time worse with
confidence, the treatment version's p99 latency and error rate) roll back at once, whatever the step;
then a step is held until it has enough users and time; then listening time per user must
not be worse with confidence, and the experiment advances along ``STAGES``, completing
(promotion) after 100%.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from recsys.analysis import SRM_ALPHA, ArmMetrics, Difference, compare
from recsys.health import ServingHealth
from recsys.rollout import STAGES, Experiment


class Action(StrEnum):
    ADVANCE = "advance"
    HOLD = "hold"
    ROLLBACK = "rollback"
    COMPLETE = "complete"


@dataclass(frozen=True)
class Guardrails:
    """When a step may end, and what rolls an experiment back."""

    min_users: int = 200
    """Users in each arm before a step can end."""
    min_step: timedelta = timedelta(hours=1)
    max_hate_rate_increase: float = 0.01
    """Treatment's hates per play may exceed control's by at most this much."""
    srm_alpha: float = SRM_ALPHA
    max_p99_ms: float = 250.0
    """The treatment version's p99 latency on the recommendation route (serving metrics)."""
    max_error_rate: float = 0.01
    """Its share of 5xx answers."""
    min_requests: int = 100
    """Requests the treatment version must have answered before latency and errors are judged."""
    repeated_looks: bool = True
    """Judge "listening worse" with the always-valid interval (:func:`recsys.analysis.always_valid`),
    which holds however often the controller looks; else with the fixed-sample Welch interval."""


@dataclass
class Decision:
    """What to do, why, and the numbers behind it."""

    action: Action
    share: float
    """The share after the decision (0 for a rollback)."""
    reasons: list[str] = field(default_factory=list)
    listening: Difference | None = None
    """Welch's fixed-sample interval (what one look alone would say)."""
    sequential: Difference | None = None
    """The always-valid interval, which the rollback rule uses unless ``repeated_looks`` is off."""
    srm_p_value: float | None = None
    """``None`` at 100%, where there is no control slice to compare with."""


def next_share(share: float) -> float | None:
    """The next stage above ``share`` (``None`` at 100%)."""
    return next((s for s in STAGES if s > share + 1e-12), None)


def decide(
    *,
    experiment: Experiment,
    treatment: ArmMetrics,
    control: ArmMetrics,
    step_age: timedelta,
    guardrails: Guardrails | None = None,
    serving: ServingHealth | None = None,
) -> Decision:
    """The controller's decision for ``experiment`` now.

    Parameters
    ----------
    experiment : Experiment
        The experiment, at its current share.
    treatment, control : ArmMetrics
        Its arms (``NAME:treatment`` and ``NAME:control``) since it started.
    step_age : timedelta
        How long the current share has been running.
    guardrails : Guardrails, optional
        Thresholds (defaults otherwise).
    serving : ServingHealth, optional
        The treatment version's latency and errors from the API's metrics
        (:func:`recsys.health.serving_health`); not judged when not given.
    """
    g = guardrails or Guardrails()
    if experiment.paused:
        return Decision(Action.HOLD, experiment.share, ["paused"])
    compared = compare(treatment, control, share=experiment.share)
    listening, sequential, srm = compared.listening, compared.sequential, compared.srm_p_value
    if srm is not None and srm < g.srm_alpha:
        reason = f"sample ratio mismatch (p={srm:.2g}): check the assignment"
        return Decision(Action.HOLD, experiment.share, [reason], srm_p_value=srm)
    judged = sequential if g.repeated_looks else listening
    broken = _guardrails_broken(treatment, control, judged, g) + _serving_broken(serving, g)
    if broken:
        return Decision(Action.ROLLBACK, 0.0, broken, listening, sequential, srm)
    waiting = _still_waiting(treatment, control, step_age, g)
    if waiting or judged is None:
        reasons = waiting or ["too few users"]
        return Decision(Action.HOLD, experiment.share, reasons, listening, sequential, srm)
    label = "always-valid 95% CI" if g.repeated_looks else "95% CI"
    summary = f"listening time per user {_describe(judged, label)}, not worse"
    following = next_share(experiment.share)
    if following is None:
        verdict = "better with confidence" if judged.low > 0 else "not shown better: promoted as not worse"
        return Decision(
            Action.COMPLETE, 1.0, [summary, f"at 100%: promote ({verdict})"], listening, sequential, srm
        )
    steps = f"{experiment.share:.0%} -> {following:.0%}"
    return Decision(Action.ADVANCE, following, [summary, steps], listening, sequential, srm)


def _guardrails_broken(
    treatment: ArmMetrics, control: ArmMetrics, listening: Difference | None, g: Guardrails
) -> list[str]:
    reasons = []
    hate_gap = treatment.hate_rate - control.hate_rate
    if hate_gap > g.max_hate_rate_increase:
        reasons.append(f"hate rate up {hate_gap:+.3f} per play (limit {g.max_hate_rate_increase:+.3f})")
    if listening is not None and listening.high < 0:
        label = "always-valid 95% CI" if g.repeated_looks else "95% CI"
        reasons.append(f"listening time per user down {_describe(listening, label)}")
    return reasons


def _serving_broken(serving: ServingHealth | None, g: Guardrails) -> list[str]:
    if serving is None or serving.requests < g.min_requests:
        return []
    reasons = []
    if serving.p99_ms > g.max_p99_ms:
        reasons.append(f"p99 latency {serving.p99_ms:.0f} ms (limit {g.max_p99_ms:.0f} ms)")
    if serving.error_rate > g.max_error_rate:
        reasons.append(f"error rate {serving.error_rate:.2%} (limit {g.max_error_rate:.2%})")
    return reasons


def _still_waiting(treatment: ArmMetrics, control: ArmMetrics, age: timedelta, g: Guardrails) -> list[str]:
    reasons = []
    smaller = min(treatment.users, control.users)
    if smaller < g.min_users:
        reasons.append(f"{smaller} users in the smaller arm (need {g.min_users})")
    if age < g.min_step:
        reasons.append(f"step running {age} (need {g.min_step})")
    return reasons


def _describe(d: Difference, label: str) -> str:
    return f"{d.estimate:+.1f}s ({label} {d.low:+.1f}..{d.high:+.1f})"


def step_age(experiment: Experiment, now: datetime) -> timedelta:
    """How long the experiment has been at its current share."""
    return now - experiment.step_started if experiment.step_started else timedelta(0)
