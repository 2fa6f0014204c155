"""The rollout simulator: the stream worker's counters, the plan's traffic, the controller's verdicts."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from recsys.errors import InvalidRequest
from recsys.experiments.aggregates import ARM_COUNTERS, add_to_arm, add_to_user
from recsys.experiments.assignment import in_control_slice
from recsys.experiments.controller import Guardrails
from recsys.experiments.simulator import (
    ArmModel,
    Outcome,
    Rollout,
    arm_counters,
    arm_rates,
    arrivals_for,
    control_share,
    draw_sessions,
    session_events,
    simulate,
)
from recsys.registry.plan import STAGES

GUARDRAILS = Guardrails(min_users=50, min_step=timedelta(minutes=10))
BASE = ArmModel()
STILL = ArmModel(mean_plays=0.0, complete=1.0, hate_rate=0.0, love_rate=0.0, concentration=None)
"""Every user plays one track to the end and does nothing else: no noise at all."""


def folded(events_by_user, rng):
    """An arm's counters from its users' events in a random interleaving, one event at a time."""
    queue = [(user, event) for user, events in events_by_user.items() for event in events]
    users: dict[str, dict[str, int]] = {}
    counters: dict[str, float] = {}
    for index in rng.permutation(len(queue)):
        user, event = queue[index]
        before = users.get(user, {})
        after = add_to_user(before, event)
        counters = add_to_arm(counters, event, new_user=not before, user_before=before, user_after=after)
        users[user] = after
    return {name: counters.get(name, 0) for name in ARM_COUNTERS}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [0, 1, 2, 7, 31])
def test_vectorised_counters_equal_folding_the_events_through_the_stream_worker(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    model = ArmModel(
        mean_plays=rng.uniform(0, 6), complete=rng.uniform(0.2, 0.8), hate_rate=0.2, love_rate=0.1
    )
    sessions = draw_sessions(model, n, rng)
    events = {f"u{i}": session_events(sessions, i, user_id=f"u{i}") for i in range(n)}
    expected = folded(events, rng)
    got = arm_counters(sessions)
    assert set(got) == set(ARM_COUNTERS)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-9)
    assert got["users"] == n and got["events"] == sum(len(e) for e in events.values())


@pytest.mark.parametrize("seed", [0, 1])
def test_sessions_follow_the_arm_model(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 40_000
    for model in (BASE, BASE.with_listening_gain(0.05), replace(BASE, hate_rate=0.08, concentration=None)):
        sessions = draw_sessions(model, n, rng)
        listen_s = sessions.totals["listen_ms"] / 1000.0
        assert listen_s.mean() == pytest.approx(model.listen_s_per_user, rel=0.015)
        plays = sessions.totals["plays"].sum()
        assert sessions.totals["hates"].sum() / plays == pytest.approx(model.hate_rate, rel=0.05)
        assert sessions.totals["completes"].sum() / plays == pytest.approx(model.complete, rel=0.02)
    assert BASE.with_listening_gain(0.05).listen_s_per_user == pytest.approx(1.05 * BASE.listen_s_per_user)
    with pytest.raises(InvalidRequest):
        ArmModel(complete=0.95).with_listening_gain(0.5)


def test_users_differ_more_with_a_smaller_concentration() -> None:
    rng = np.random.default_rng(3)
    spread = {}
    for concentration in (None, 50.0, 2.0):
        model = replace(BASE, concentration=concentration)
        totals = draw_sessions(model, 20_000, rng).totals
        spread[concentration] = np.var(totals["completes"] / totals["plays"])
    assert spread[None] < spread[50.0] < spread[2.0]


def test_each_arm_gets_the_share_of_arrivals_the_plan_gives() -> None:
    positions = (np.arange(200_000) + 0.5) / 200_000
    for share in (*STAGES, 0.3, 0.7):
        sliced = np.mean([in_control_slice(p, share) for p in positions[::10]])
        assert control_share(share) == pytest.approx(sliced, abs=1e-4)
        assert arm_rates(500.0, share) == pytest.approx((500.0 * share, 500.0 * control_share(share)))
    assert arm_rates(300.0, 0.01) == pytest.approx((3.0, 3.0))
    assert arm_rates(300.0, 0.5) == pytest.approx((150.0, 150.0))
    assert arm_rates(300.0, 1.0) == (300.0, 0.0)  # no control slice at 100%
    for start, every in ((1, 1), (5, 1), (10, 3)):
        assert arm_rates(arrivals_for(start, look_every=every), STAGES[0])[0] * every == pytest.approx(start)


@pytest.mark.parametrize("start", [2, 10])
def test_the_first_look_sees_about_start_users_per_arm(start: int) -> None:
    rollout = Rollout(BASE, BASE, arrivals_for(start, look_every=2), GUARDRAILS, look_every=2, max_minutes=2)
    runs = [simulate(rollout, seed=seed) for seed in range(300)]
    assert all(r.outcome is Outcome.RUNNING and r.looks == 1 for r in runs)
    seen = np.array([r.first_look_users for r in runs])
    assert seen.mean(axis=0) == pytest.approx([start, start], rel=0.15)


@pytest.mark.parametrize("seed", range(3))
def test_an_obviously_harmful_treatment_is_rolled_back_before_5_percent(seed: int) -> None:
    harmful = replace(BASE, hate_rate=0.6)
    run = simulate(Rollout(harmful, BASE, arrivals_for(5), GUARDRAILS), seed=seed)
    assert run.outcome is Outcome.ROLLED_BACK and run.rolled_back_early
    assert run.share == STAGES[0] and "hate rate up" in " ".join(run.reasons)


@pytest.mark.parametrize("seed", range(3))
def test_identical_arms_without_noise_are_never_rolled_back_and_climb_to_promotion(seed: int) -> None:
    run = simulate(Rollout(STILL, STILL, arrivals_for(10), GUARDRAILS), seed=seed)
    assert run.outcome is Outcome.PROMOTED and run.share == 1.0 and not run.rolled_back
    assert run.minute == len(STAGES) * 10  # min_users reached within the first step, then min_step each
    assert "promote" in run.reasons[-1]


def test_a_run_that_has_not_ended_reports_running() -> None:
    run = simulate(Rollout(BASE, BASE, arrivals_for(1), GUARDRAILS, max_minutes=15), seed=0)
    assert run.outcome is Outcome.RUNNING and run.minute == 15 and run.looks == 15 and run.share == STAGES[0]
    assert any("users in the smaller arm" in reason for reason in run.reasons)
    with pytest.raises(InvalidRequest):
        simulate(replace(Rollout(BASE, BASE, 1.0, GUARDRAILS), look_every=0), seed=0)
