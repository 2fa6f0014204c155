"""The rollout controller's decision: advance, hold, roll back or complete an experiment.

Pure: given an experiment, its two arms' counters (:mod:`recsys.experiments.analysis`), how long the
current step has run, and the guardrails, it returns what to do and every reason, with
the numbers. ``recsys rollout advance`` applies the decision to the registry, which
records it and announces it on ``model-events``.

Every rule that can roll back is a statistical decision over users that holds at every
look (:mod:`recsys.experiments.confidence_sequences`): listening time per user worse with confidence; hate or
skip rate per play (ratio metrics, delta method) higher than control's by more than its
non-inferiority margin with confidence; the treatment version's share of server errors,
or of answers slower than the latency limit, above its limit with confidence (an exact
test of a rate). The experiment's error rate (5% by default) is split equally between
the rules judged, so an equal treatment is rolled back in at most that share of
experiments however long it runs and however often it is looked at, from its first user.

Order of the checks: a broken assignment (sample-ratio mismatch) holds everything, since
no comparison can be trusted; then any rule breached rolls back at once, whatever the
step; then a step is held until it has enough users and time; then the experiment
advances along ``STAGES``, completing (promotion) after 100%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from recsys.experiments.analysis import (
    CONFIDENCE,
    SRM_ALPHA,
    STANDARDISED_EFFECT,
    ArmMetrics,
    Difference,
    compare,
    rate_difference,
    sequential_difference,
)
from recsys.experiments.confidence_sequences import rate_exceeds, rate_lower_bound
from recsys.experiments.serving_health import ServingHealth
from recsys.registry.plan import STAGES, Experiment

RATE_EFFECT = 0.3
"""Default of :attr:`Guardrails.rate_effect` (chosen by simulation: benchmarks/rollout_decisions.py)."""


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
    alpha: float = 1.0 - CONFIDENCE
    """The chance, per experiment and over all its looks, of rolling back a treatment that is
    no worse than control; split equally between the rules judged."""
    max_listening_decrease: float = 0.0
    """Seconds per user the treatment may lose before it is rolled back (0: any loss shown
    with confidence)."""
    max_hate_rate_increase: float = 0.01
    """Non-inferiority margin: treatment's hates per play may exceed control's by this much."""
    max_skip_rate_increase: float = 0.05
    """The same for skips per play."""
    srm_alpha: float = SRM_ALPHA
    max_p99_ms: float = 250.0
    """The treatment version's answers may be slower than this in at most 1% of requests."""
    max_error_rate: float = 0.01
    """Its share of 5xx answers."""
    listening_effect: float = STANDARDISED_EFFECT
    """The standardised effect (difference over the per-user standard deviation) the listening
    interval is tuned to resolve: small, since a few percent of listening time matters."""
    rate_effect: float = RATE_EFFECT
    """The same for the hate and skip rates: a harmful change of a rate is a large one, to be
    caught within the first steps' few hundred users."""
    repeated_looks: bool = True
    """Judge with the always-valid intervals, which hold however often the controller looks;
    else with fixed-sample intervals (only for a single, planned look)."""


@dataclass(frozen=True)
class GuardrailCheck:
    """One rule judged at one look: treatment minus control with its always-valid interval.

    ``metric`` is ``listening_s`` (listening seconds per user), ``hate_rate`` or ``skip_rate``
    (per play, a ratio over users), ``error_rate`` or ``slow_rate`` (the treatment version's
    share of 5xx answers, or of answers slower than the p99 limit: no control, so ``estimate``
    is the treatment's own rate). ``breached`` is the verdict: the interval lies beyond
    ``margin`` in the harmful direction.
    """

    metric: str
    estimate: float
    low: float
    high: float
    margin: float
    alpha: float
    """The error rate this rule was given (its share of the experiment's)."""
    treatment_users: int
    control_users: int
    breached: bool


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
    checks: list[GuardrailCheck] = field(default_factory=list)
    """Every rule judged at this look, with its interval and user counts (empty while the
    arms are too small to judge)."""


def next_share(share: float) -> float | None:
    """The next stage above ``share`` (``None`` at 100%)."""
    return next((s for s in STAGES if s > share + 1e-12), None)


SLOW_SHARE = 0.01
"""Answers slower than ``max_p99_ms`` allowed: the p99 limit as a rate."""


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
        (:func:`recsys.experiments.serving_health.serving_health`); not judged when not given.
    """
    g = guardrails or Guardrails()
    if experiment.paused:
        return Decision(Action.HOLD, experiment.share, ["paused"])
    compared = compare(treatment, control, share=experiment.share)
    listening, srm = compared.listening, compared.srm_p_value
    if srm is not None and srm < g.srm_alpha:
        reason = f"sample ratio mismatch (p={srm:.2g}): check the assignment"
        return Decision(Action.HOLD, experiment.share, [reason], srm_p_value=srm)
    checks = guardrail_checks(treatment, control, g, serving)
    judged = next((c for c in checks if c.metric == LISTENING), None)
    sequential = _as_difference(judged) if judged else None
    broken = [_describe_check(c) for c in checks if c.breached]
    if broken:
        return Decision(Action.ROLLBACK, 0.0, broken, listening, sequential, srm, checks)
    waiting = _still_waiting(treatment, control, step_age, g)
    if waiting or judged is None:
        reasons = waiting or ["too few users"]
        return Decision(Action.HOLD, experiment.share, reasons, listening, sequential, srm, checks)
    summary = f"listening time per user {_describe(judged)}, not worse"
    following = next_share(experiment.share)
    if following is None:
        verdict = "better with confidence" if judged.low > 0 else "not shown better: promoted as not worse"
        reasons = [summary, f"at 100%: promote ({verdict})"]
        return Decision(Action.COMPLETE, 1.0, reasons, listening, sequential, srm, checks)
    steps = f"{experiment.share:.0%} -> {following:.0%}"
    return Decision(Action.ADVANCE, following, [summary, steps], listening, sequential, srm, checks)


LISTENING, HATE_RATE, SKIP_RATE = "listening_s", "hate_rate", "skip_rate"
ERROR_RATE, SLOW_RATE = "error_rate", "slow_rate"


def guardrail_checks(
    treatment: ArmMetrics, control: ArmMetrics, g: Guardrails, serving: ServingHealth | None = None
) -> list[GuardrailCheck]:
    """Every rule judged at this look, each at its share of the experiment's error rate.

    Listening, hate and skip rates need two users in each arm (before that nothing is
    judged); the serving rules need the treatment version's metrics.
    """
    rules = 3 + (2 if serving is not None else 0)
    alpha = g.alpha / rules
    checks: list[GuardrailCheck] = []
    if min(treatment.users, control.users) >= 2:
        checks.append(_listening_check(treatment, control, g, alpha))
        for rate, margin in (("hate", g.max_hate_rate_increase), ("skip", g.max_skip_rate_increase)):
            check = _rate_check(treatment, control, rate, margin, alpha, g)
            if check is not None:
                checks.append(check)
    if serving is not None:
        checks += _serving_checks(serving, g, alpha)
    return checks


def _interval(
    treatment: ArmMetrics, control: ArmMetrics, metric: str, alpha: float, g: Guardrails
) -> Difference | None:
    confidence, repeated = 1.0 - alpha, g.repeated_looks
    if metric == LISTENING:
        if repeated:
            return sequential_difference(
                treatment.listening, control.listening, confidence=confidence, effect=g.listening_effect
            )
        return _fixed(treatment.listening.mean - control.listening.mean, treatment, control, confidence)
    rate = metric.removesuffix("_rate")
    if repeated:
        return rate_difference(treatment, control, rate, confidence=confidence, effect=g.rate_effect)
    t, c = treatment.rate(rate), control.rate(rate)
    if t is None or c is None:
        return None
    return _fixed_samples(t.mean - c.mean, t.variance / t.n + c.variance / c.n, confidence)


def _listening_check(
    treatment: ArmMetrics, control: ArmMetrics, g: Guardrails, alpha: float
) -> GuardrailCheck:
    found = _interval(treatment, control, LISTENING, alpha, g)
    assert found is not None  # listening always has a variance
    margin = -g.max_listening_decrease
    return _check(LISTENING, found, margin, alpha, treatment, control, breached=found.high < margin)


def _rate_check(
    treatment: ArmMetrics, control: ArmMetrics, rate: str, margin: float, alpha: float, g: Guardrails
) -> GuardrailCheck | None:
    metric = f"{rate}_rate"
    found = _interval(treatment, control, metric, alpha, g)
    if found is None:
        return None
    return _check(metric, found, margin, alpha, treatment, control, breached=found.low > margin)


def _serving_checks(serving: ServingHealth, g: Guardrails, alpha: float) -> list[GuardrailCheck]:
    out = []
    for metric, count, limit in (
        (ERROR_RATE, serving.errors, g.max_error_rate),
        (SLOW_RATE, serving.slower_than(g.max_p99_ms), SLOW_SHARE),
    ):
        n = serving.requests
        estimate = count / n if n else 0.0
        low = rate_lower_bound(count, n, alpha=alpha)
        breached = rate_exceeds(count, n, limit, alpha=alpha)
        out.append(GuardrailCheck(metric, estimate, low, 1.0, limit, alpha, n, 0, breached))
    return out


def _check(
    metric: str,
    found: Difference,
    margin: float,
    alpha: float,
    treatment: ArmMetrics,
    control: ArmMetrics,
    *,
    breached: bool,
) -> GuardrailCheck:
    return GuardrailCheck(
        metric, found.estimate, found.low, found.high, margin, alpha, treatment.users, control.users, breached
    )


def _fixed(estimate: float, treatment: ArmMetrics, control: ArmMetrics, confidence: float) -> Difference:
    variance = treatment.listen_s_variance / treatment.users + control.listen_s_variance / control.users
    return _fixed_samples(estimate, variance, confidence)


def _fixed_samples(estimate: float, variance: float, confidence: float) -> Difference:
    """A normal fixed-sample interval: for one planned look only (``repeated_looks`` off)."""
    from scipy import stats

    radius = float(stats.norm.ppf(0.5 + confidence / 2)) * math.sqrt(variance)
    return Difference(estimate, estimate - radius, estimate + radius, math.nan)


def _as_difference(check: GuardrailCheck) -> Difference:
    return Difference(check.estimate, check.low, check.high, math.nan)


def _describe_check(c: GuardrailCheck) -> str:
    users = f"{c.treatment_users} vs {c.control_users} users"
    if c.metric == LISTENING:
        return f"listening time per user down {_describe(c)} ({users})"
    if c.metric in (HATE_RATE, SKIP_RATE):
        name = c.metric.replace("_", " ")
        return (
            f"{name} up {c.estimate:+.3f} per play, above the margin {c.margin:+.3f} with confidence "
            f"({_interval_text(c)}, {users})"
        )
    name = "error rate" if c.metric == ERROR_RATE else "answers slower than the p99 limit"
    return (
        f"{name} {c.estimate:.2%} over {c.treatment_users} requests, above {c.margin:.2%} with confidence "
        f"(lower bound {c.low:.2%})"
    )


def _still_waiting(treatment: ArmMetrics, control: ArmMetrics, age: timedelta, g: Guardrails) -> list[str]:
    reasons = []
    smaller = min(treatment.users, control.users)
    if smaller < g.min_users:
        reasons.append(f"{smaller} users in the smaller arm (need {g.min_users})")
    if age < g.min_step:
        reasons.append(f"step running {age} (need {g.min_step})")
    return reasons


def _interval_text(c: GuardrailCheck) -> str:
    return f"{1 - c.alpha:.1%} always-valid CI {c.low:+.3f}..{c.high:+.3f}"


def _describe(c: GuardrailCheck) -> str:
    return f"{c.estimate:+.1f}s ({1 - c.alpha:.1%} always-valid CI {c.low:+.1f}..{c.high:+.1f})"


def step_age(experiment: Experiment, now: datetime) -> timedelta:
    """How long the experiment has been at its current share."""
    return now - experiment.step_started if experiment.step_started else timedelta(0)
