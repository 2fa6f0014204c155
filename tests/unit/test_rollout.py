"""Sticky, monotone, independent assignment of users to experiment arms."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.errors import InvalidRequest
from recsys.rollout import CONTROL, HOLDOUT, HOLDOUT_SALT, STAGES, Experiment, RolloutPlan, assign, bucket

users = st.text(min_size=1, max_size=40)


def plan(share: float, *, name: str = "exp", treatment: str = "2.2") -> RolloutPlan:
    return RolloutPlan(experiments=[Experiment(name=name, treatment=treatment, share=share)])


@given(users)
def test_assignment_is_sticky(user: str) -> None:
    p = plan(0.3)
    assert assign(user_id=user, plan=p) == assign(user_id=user, plan=p.model_copy(deep=True))


@given(users, st.lists(st.floats(0, 1), min_size=2, max_size=6))
def test_growing_a_share_never_moves_a_treated_user_back(user: str, shares: list[float]) -> None:
    treated = False
    for share in sorted(shares):
        now = assign(user_id=user, plan=plan(share)).version is not None
        assert now or not treated
        treated = now


@settings(max_examples=20)
@given(st.integers(0, 10**6))
def test_the_usual_ramp_is_monotone_for_many_users(seed: int) -> None:
    ids = [f"user-{seed}-{i}" for i in range(300)]
    previous: set[str] = set()
    for share in STAGES:
        treated = {u for u in ids if assign(user_id=u, plan=plan(share)).version == "2.2"}
        assert previous <= treated
        previous = treated
    assert previous == set(ids)


def test_shares_are_respected_and_salts_independent() -> None:
    ids = [f"u{i}" for i in range(20_000)]
    in_a = {u for u in ids if bucket(u, "a") < 0.1}
    in_b = {u for u in ids if bucket(u, "b") < 0.1}
    assert abs(len(in_a) / len(ids) - 0.1) < 0.01
    overlap = len(in_a & in_b) / len(ids)
    assert abs(overlap - 0.01) < 0.004  # independent: 10% of 10%


def test_first_experiment_wins_and_paused_ones_are_skipped() -> None:
    p = RolloutPlan(
        experiments=[
            Experiment(name="a", treatment="2.2", share=1.0),
            Experiment(name="b", treatment="2.3", share=1.0),
        ]
    )
    assert assign(user_id="x", plan=p).variant == "a:treatment"
    p.experiments[0].paused = True
    assert assign(user_id="x", plan=p).version == "2.3"
    assert p.versions() == {"2.3"}


def test_plan_changes_bump_the_revision() -> None:
    p = RolloutPlan().upsert(Experiment(name="a", treatment="2.2", share=0.01))
    p2 = p.upsert(Experiment(name="a", treatment="2.2", share=0.02))
    assert (
        (p.revision, p2.revision) == (1, 2) and len(p2.experiments) == 1 and p2.experiments[0].share == 0.02
    )
    assert p2.remove("a").experiments == []
    with pytest.raises(InvalidRequest):
        p2.remove("zzz")


def test_treatment_must_be_a_version() -> None:
    with pytest.raises(InvalidRequest):
        Experiment(name="a", treatment="latest", share=0.1)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10**6))
def test_each_experiment_has_a_control_slice_as_large_as_its_treatment(seed: int) -> None:
    ids = [f"user-{seed}-{i}" for i in range(4000)]
    for share in STAGES:
        variants = [assign(user_id=u, plan=plan(share)).variant for u in ids]
        treated, control = variants.count("exp:treatment"), variants.count("exp:control")
        expected = min(share, 1 - share) * len(ids)
        assert abs(control - expected) <= 4 * (expected**0.5) + 2  # binomial noise
        assert treated + control + variants.count(CONTROL) == len(ids)
        assert all(v in {"exp:treatment", "exp:control", CONTROL} for v in variants)


@given(st.text(min_size=1, max_size=20))
def test_holdout_users_are_in_no_experiment(user: str) -> None:
    experiment = Experiment(name="exp", treatment="2.2", share=1.0)
    plan = RolloutPlan(experiments=[experiment], holdout=0.1)
    held = bucket(user, HOLDOUT_SALT) < 0.1
    assert (assign(user_id=user, plan=plan).variant == HOLDOUT) is held
    if not held:
        assert assign(user_id=user, plan=plan).variant == "exp:treatment"


def test_the_holdout_has_its_share_and_survives_plan_changes() -> None:
    plan = RolloutPlan().with_holdout(0.05)
    held = sum(assign(user_id=f"u{i}", plan=plan).variant == HOLDOUT for i in range(20_000))
    assert 900 < held < 1100
    plan = plan.upsert(Experiment(name="exp", treatment="2.2", share=0.5)).remove("exp")
    assert plan.holdout == 0.05 and plan.revision == 3
    with pytest.raises(ValueError):
        RolloutPlan(holdout=0.6)
