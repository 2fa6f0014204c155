"""The rollout controller's decisions, one rule at a time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from recsys.analysis import ArmMetrics
from recsys.controller import Action, Guardrails, decide, next_share
from recsys.rollout import STAGES, Experiment

LONG_ENOUGH = timedelta(hours=2)


def arm(users: int = 500, listen: float = 600.0, sd: float = 300.0, hates: float = 0.01) -> ArmMetrics:
    return ArmMetrics(
        users=users,
        listen_s_per_user=listen,
        listen_s_variance=sd**2,
        plays_per_user=4.0,
        love_rate=0.05,
        hate_rate=hates,
        skip_rate=0.2,
    )


def at(share: float, **extra: bool) -> Experiment:
    return Experiment(name="v2.2", treatment="2.2", share=share, **extra)


def test_the_ramp_advances_one_stage_at_a_time_while_listening_is_not_worse() -> None:
    assert [next_share(s) for s in STAGES] == [*STAGES[1:], None]
    decision = decide(experiment=at(0.01), treatment=arm(), control=arm(), step_age=LONG_ENOUGH)
    assert decision.action is Action.ADVANCE and decision.share == 0.02
    assert decision.listening is not None and decision.listening.low < 0 < decision.listening.high
    # at 100% there is no control slice any more: the treatment outgrows it without a mismatch
    done = decide(experiment=at(1.0), treatment=arm(5000, listen=640), control=arm(), step_age=LONG_ENOUGH)
    assert done.action is Action.COMPLETE and "promote" in done.reasons[-1] and done.srm_p_value is None
    assert "not shown better" in done.reasons[-1]  # +40 s is inside the always-valid interval
    win = decide(experiment=at(1.0), treatment=arm(5000, listen=700), control=arm(), step_age=LONG_ENOUGH)
    assert "better with confidence" in win.reasons[-1] and "always-valid 95% CI" in win.reasons[0]


@pytest.mark.parametrize(
    ("users", "age", "reason"),
    [(150, LONG_ENOUGH, "150 users in the smaller arm"), (500, timedelta(minutes=5), "step running 0:05:00")],
)
def test_a_step_is_held_until_it_has_enough_users_and_time(users: int, age: timedelta, reason: str) -> None:
    decision = decide(experiment=at(0.05), treatment=arm(users), control=arm(users), step_age=age)
    assert decision.action is Action.HOLD and decision.share == 0.05
    assert any(reason in r for r in decision.reasons)


def test_worse_listening_or_more_hates_roll_back_at_once() -> None:
    worse = decide(experiment=at(0.01), treatment=arm(listen=450), control=arm(), step_age=timedelta(0))
    assert worse.action is Action.ROLLBACK and worse.share == 0.0
    assert "listening time per user down" in worse.reasons[0]
    hated = decide(experiment=at(0.01), treatment=arm(hates=0.05), control=arm(), step_age=timedelta(0))
    assert hated.action is Action.ROLLBACK and "hate rate up +0.040" in hated.reasons[0]
    lenient = Guardrails(max_hate_rate_increase=0.1)
    kept = decide(
        experiment=at(0.01),
        treatment=arm(hates=0.05),
        control=arm(),
        step_age=LONG_ENOUGH,
        guardrails=lenient,
    )
    assert kept.action is Action.ADVANCE


def test_a_sample_ratio_mismatch_or_a_pause_holds_everything() -> None:
    skewed = decide(
        experiment=at(0.1), treatment=arm(500), control=arm(700, listen=100), step_age=LONG_ENOUGH
    )
    assert skewed.action is Action.HOLD and "sample ratio mismatch" in skewed.reasons[0]
    paused = decide(experiment=at(0.1, paused=True), treatment=arm(), control=arm(), step_age=LONG_ENOUGH)
    assert paused.action is Action.HOLD and paused.reasons == ["paused"]
