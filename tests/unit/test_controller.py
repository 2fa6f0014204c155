"""The rollout controller's decisions, one rule at a time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from recsys.experiments.analysis import ArmMetrics
from recsys.experiments.controller import Action, Guardrails, decide, guardrail_checks, next_share
from recsys.registry.plan import STAGES, Experiment

LONG_ENOUGH = timedelta(hours=2)


def arm(
    users: int = 500,
    listen: float = 600.0,
    sd: float = 300.0,
    hates: float = 0.01,
    skips: float = 0.2,
    plays: float = 4.0,
) -> ArmMetrics:
    """An arm whose per-user variances are those of binomial hates and skips over ``plays``."""
    return ArmMetrics(
        users=users,
        listen_s_per_user=listen,
        listen_s_variance=sd**2,
        plays_per_user=plays,
        love_rate=0.05,
        hate_rate=hates,
        skip_rate=skips,
        hate_rate_variance=hates * (1 - hates) / plays,
        skip_rate_variance=skips * (1 - skips) / plays,
    )


def at(share: float, **extra: bool) -> Experiment:
    return Experiment(name="v2.2", treatment="2.2", share=share, **extra)


def test_the_ramp_advances_one_stage_at_a_time_while_listening_is_not_worse() -> None:
    assert [next_share(s) for s in STAGES] == [*STAGES[1:], None]
    decision = decide(experiment=at(0.01), treatment=arm(), control=arm(), step_age=LONG_ENOUGH)
    assert decision.action is Action.ADVANCE and decision.share == 0.02
    assert decision.listening is not None and decision.listening.low < 0 < decision.listening.high
    assert {c.metric for c in decision.checks} == {"listening_s", "hate_rate", "skip_rate"}
    # at 100% there is no control slice any more: the treatment outgrows it without a mismatch
    done = decide(experiment=at(1.0), treatment=arm(5000, listen=620), control=arm(), step_age=LONG_ENOUGH)
    assert done.action is Action.COMPLETE and "promote" in done.reasons[-1] and done.srm_p_value is None
    assert "not shown better" in done.reasons[-1]  # +20 s is inside the always-valid interval
    win = decide(experiment=at(1.0), treatment=arm(5000, listen=700), control=arm(), step_age=LONG_ENOUGH)
    assert "better with confidence" in win.reasons[-1] and "always-valid CI" in win.reasons[0]


@pytest.mark.parametrize(
    ("users", "age", "reason"),
    [(150, LONG_ENOUGH, "150 users in the smaller arm"), (500, timedelta(minutes=5), "step running 0:05:00")],
)
def test_a_step_is_held_until_it_has_enough_users_and_time(users: int, age: timedelta, reason: str) -> None:
    decision = decide(experiment=at(0.05), treatment=arm(users), control=arm(users), step_age=age)
    assert decision.action is Action.HOLD and decision.share == 0.05
    assert any(reason in r for r in decision.reasons)


def test_listening_worse_with_confidence_rolls_back_at_once() -> None:
    worse = decide(experiment=at(0.01), treatment=arm(listen=450), control=arm(), step_age=timedelta(0))
    assert worse.action is Action.ROLLBACK and worse.share == 0.0
    assert "listening time per user down" in worse.reasons[0] and "500 vs 500 users" in worse.reasons[0]
    (check,) = [c for c in worse.checks if c.breached]
    assert check.metric == "listening_s" and check.high < 0 and check.treatment_users == 500


def test_a_hate_rate_is_judged_against_its_margin_with_confidence() -> None:
    hated = decide(
        experiment=at(0.01), treatment=arm(hates=0.08), control=arm(hates=0.03), step_age=timedelta(0)
    )
    assert hated.action is Action.ROLLBACK and "hate rate up +0.050 per play" in hated.reasons[0]
    (check,) = [c for c in hated.checks if c.breached]
    assert check.low > check.margin == 0.01
    # the same point estimates over three and six users are no evidence at all
    few = decide(
        experiment=at(0.01), treatment=arm(3, hates=0.33), control=arm(6, hates=0.0), step_age=timedelta(0)
    )
    assert few.action is Action.HOLD
    # an increase inside the margin never rolls back, however many users show it
    small = decide(
        experiment=at(0.01),
        treatment=arm(200_000, hates=0.035),
        control=arm(200_000, hates=0.03),
        step_age=LONG_ENOUGH,
    )
    assert small.action is Action.ADVANCE
    lenient = Guardrails(max_hate_rate_increase=0.1)
    kept = decide(
        experiment=at(0.01),
        treatment=arm(hates=0.08),
        control=arm(hates=0.03),
        step_age=LONG_ENOUGH,
        guardrails=lenient,
    )
    assert kept.action is Action.ADVANCE


def test_the_error_rate_is_split_between_the_rules() -> None:
    checks = guardrail_checks(arm(), arm(), Guardrails(alpha=0.06))
    assert [c.alpha for c in checks] == pytest.approx([0.02] * 3)


def test_counters_without_per_user_sums_leave_the_rate_unjudged() -> None:
    old = ArmMetrics(500, 600.0, 300.0**2, 4.0, 0.05, 0.5, 0.2)
    decision = decide(experiment=at(0.01), treatment=old, control=arm(), step_age=LONG_ENOUGH)
    assert decision.action is Action.ADVANCE
    assert {c.metric for c in decision.checks} == {"listening_s"}


def test_a_sample_ratio_mismatch_or_a_pause_holds_everything() -> None:
    skewed = decide(
        experiment=at(0.1), treatment=arm(500), control=arm(700, listen=100), step_age=LONG_ENOUGH
    )
    assert skewed.action is Action.HOLD and "sample ratio mismatch" in skewed.reasons[0]
    paused = decide(experiment=at(0.1, paused=True), treatment=arm(), control=arm(), step_age=LONG_ENOUGH)
    assert paused.action is Action.HOLD and paused.reasons == ["paused"]
