"""Sticky, monotone, independent assignment of users to experiment arms."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.errors import InvalidRequest
from recsys.experiments.analysis import sample_ratio_mismatch
from recsys.experiments.assignment import Assignment, assign, bucket
from recsys.registry.plan import (
    CONTROL,
    HOLDOUT,
    HOLDOUT_SALT,
    STAGES,
    Experiment,
    ExperimentMode,
    RolloutPlan,
)

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


def interleaving(share: float, *, name: str = "il", treatment: str = "2.2") -> Experiment:
    return Experiment(name=name, treatment=treatment, share=share, mode=ExperimentMode.INTERLEAVE)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(STAGES))
def test_interleaved_users_get_both_versions_and_there_is_no_control_slice(seed: int, share: float) -> None:
    ids = [f"user-{seed}-{i}" for i in range(3000)]
    p = RolloutPlan(experiments=[interleaving(share)])
    assignments = [assign(user_id=u, plan=p) for u in ids]
    inside = [a for a in assignments if a.variant == "il:interleave"]
    assert all(a.version == "2.2" and a.interleaved and a.experiment == "il" for a in inside)
    assert all(a == Assignment(None, CONTROL) for a in assignments if a not in inside)
    expected = share * len(ids)
    assert abs(len(inside) - expected) <= 4 * expected**0.5 + 2


def test_an_ab_experiment_is_unchanged_beside_an_interleaving_one() -> None:
    ab = Experiment(name="ab", treatment="2.3", share=0.1)
    alone = RolloutPlan(experiments=[ab])
    both = RolloutPlan(experiments=[ab, interleaving(0.1)])
    for i in range(5000):
        user = f"u{i}"
        before, after = assign(user_id=user, plan=alone), assign(user_id=user, plan=both)
        if after.variant != "il:interleave":
            assert after == before
        else:
            assert before.variant in (CONTROL, "ab:control") and after.version != "2.3"
    assert (
        Experiment.model_validate({"name": "old", "treatment": "2.2", "share": 0.1}).mode == ExperimentMode.AB
    )


def test_a_new_mode_starts_a_new_step() -> None:
    p = RolloutPlan().upsert(interleaving(0.01))
    started = p.experiments[0].step_started
    same = p.upsert(interleaving(0.01))
    assert same.experiments[0].step_started == started
    switched = same.upsert(interleaving(0.01).model_copy(update={"mode": ExperimentMode.AB}))
    moved = switched.experiments[0]
    assert moved.mode == ExperimentMode.AB and moved.step_started is not None and started is not None
    assert moved.step_started > started


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ten_concurrent_experiments_are_independent(seed: int) -> None:
    """Each experiment takes its share of the users the ones before it left (an A/B experiment
    takes as many again for its control slice), whatever their modes."""
    share, n = 0.08, 30_000
    experiments = [
        interleaving(share, name=f"e{i}") if i % 2 else Experiment(name=f"e{i}", treatment="2.2", share=share)
        for i in range(10)
    ]
    p = RolloutPlan(experiments=experiments)
    ids = [f"s{seed}-u{i}" for i in range(n)]
    counts = Counter(assign(user_id=u, plan=p).variant for u in ids)
    left = 1.0
    for i, experiment in enumerate(experiments):
        interleaved = experiment.mode == ExperimentMode.INTERLEAVE
        arm = "interleave" if interleaved else "treatment"
        expected = n * share * left
        assert abs(counts[f"e{i}:{arm}"] - expected) <= 4 * expected**0.5
        left *= 1 - share * (1 if interleaved else 2)
    inside = {i: {u for u in ids if bucket(u, f"e{i}") < share} for i in range(10)}
    for i in range(10):
        for j in range(i + 1, 10):
            both = len(inside[i] & inside[j])
            assert abs(both - n * share**2) <= 4 * (n * share**2) ** 0.5 + 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ten_experiments_at_once_each_get_two_arms_of_equal_size(seed: int) -> None:
    """Every experiment draws both arms from the users earlier ones left, so the sample-ratio
    check holds for the tenth experiment as for the first, whatever the shares."""
    rng = np.random.default_rng(seed)
    shares = rng.choice(STAGES[:4], 10)
    p = RolloutPlan(
        experiments=[Experiment(name=f"e{i}", treatment="2.2", share=float(s)) for i, s in enumerate(shares)]
    )
    counts = Counter(assign(user_id=f"s{seed}-{i}", plan=p).variant for i in range(30_000))
    for i in range(10):
        treated, control = counts[f"e{i}:treatment"], counts[f"e{i}:control"]
        users = {"treatment": treated, "control": control}
        assert sample_ratio_mismatch(users, {"treatment": 1.0, "control": 1.0}) > 1e-4, (i, users)
    assert counts["e0:treatment"] == pytest.approx(30_000 * shares[0], rel=0.25, abs=30)
