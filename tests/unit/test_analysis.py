"""Experiment statistics from arm counters agree with the same statistics over the raw users."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from recsys.errors import InvalidRequest
from recsys.events.schemas import FeedbackEvent
from recsys.events.weights import FeedbackType
from recsys.experiments.aggregates import add_to_arm, add_to_user
from recsys.experiments.analysis import ArmMetrics, always_valid, sample_ratio_mismatch, welch

listening = st.lists(st.integers(min_value=0, max_value=3_600_000), min_size=2, max_size=40)


def counters_for(per_user_ms: list[int]) -> dict[str, float]:
    """The arm's counters after each user listened in two events (so totals grow per user)."""
    counters: dict[str, float] = {}
    for i, total_ms in enumerate(per_user_ms):
        user: dict[str, int] = {}
        for part, kind in (
            (total_ms // 2, FeedbackType.PLAY),
            (total_ms - total_ms // 2, FeedbackType.COMPLETE),
        ):
            event = FeedbackEvent(user_id=f"u{i}", track_id="t", type=kind, listen_ms=part)
            counters = add_to_arm(counters, event, new_user=not user, user_before=user)
            user = add_to_user(user, event)
    return counters


@settings(max_examples=60, deadline=None)
@given(listening, listening)
def test_welch_from_counters_matches_the_t_test_over_users(treated: list[int], control: list[int]) -> None:
    a, b = ArmMetrics.from_counters(counters_for(treated)), ArmMetrics.from_counters(counters_for(control))
    x, y = np.array(treated) / 1000.0, np.array(control) / 1000.0
    assert a.users == len(treated) and a.plays_per_user == pytest.approx(2.0)
    assert a.listen_s_per_user == pytest.approx(x.mean(), rel=1e-9, abs=1e-9)
    assert a.listen_s_variance == pytest.approx(x.var(ddof=1), rel=1e-6, abs=1e-6)
    diff = welch(a, b)
    assert diff.estimate == pytest.approx(x.mean() - y.mean(), abs=1e-6)
    spread = all(v.std() > 1e-3 * max(1.0, abs(v.mean())) for v in (x, y))
    if spread:  # scipy's reference loses precision on (nearly) constant samples
        reference = stats.ttest_ind(x, y, equal_var=False)
        low, high = reference.confidence_interval(0.95)
        assert diff.p_value == pytest.approx(reference.pvalue, rel=1e-4, abs=1e-9)
        assert (diff.low, diff.high) == pytest.approx((low, high), rel=1e-4, abs=1e-6)


def test_rates_are_per_play_and_tiny_arms_are_refused() -> None:
    counters = {
        "users": 2,
        "plays": 10,
        "loves": 1,
        "hates": 2,
        "skips": 5,
        "listen_ms": 60_000,
        "listen_s_sq": 1800,
    }
    arm = ArmMetrics.from_counters(counters)
    assert (arm.love_rate, arm.hate_rate, arm.skip_rate, arm.plays_per_user) == (0.1, 0.2, 0.5, 5.0)
    with pytest.raises(InvalidRequest, match="at least two users"):
        welch(ArmMetrics.from_counters({"users": 1}), arm)


def test_sample_ratio_mismatch() -> None:
    assert sample_ratio_mismatch({"a": 5000, "b": 5000}, {"a": 0.5, "b": 0.5}) > 0.9
    assert sample_ratio_mismatch({"a": 9_900, "b": 100}, {"a": 0.99, "b": 0.01}) > 0.5
    assert sample_ratio_mismatch({"a": 5000, "b": 5400}, {"a": 0.5, "b": 0.5}) < 0.001
    assert sample_ratio_mismatch({"a": 10, "b": 3}, {"a": 1.0, "b": 0.0}) == 0.0
    assert sample_ratio_mismatch({}, {"a": 0.5, "b": 0.5}) == 1.0


def arm_from(values: np.ndarray) -> ArmMetrics:
    return ArmMetrics(
        users=len(values),
        listen_s_per_user=float(values.mean()),
        listen_s_variance=float(values.var(ddof=1)),
        plays_per_user=1.0,
        love_rate=0.0,
        hate_rate=0.0,
        skip_rate=0.0,
    )


def test_the_always_valid_interval_holds_over_repeated_looks_where_welch_does_not() -> None:
    """A/A experiments looked at 20 times as users accumulate: how often does any look
    exclude zero? Welch's fixed-sample interval: far above 5%; the always-valid one: not."""
    rng = np.random.default_rng(3)
    runs, looks, step = 400, 20, 100
    found = {"welch": 0, "always_valid": 0}
    for _ in range(runs):
        a, b = rng.normal(600.0, 300.0, (2, looks * step))
        for name, interval in (("welch", welch), ("always_valid", always_valid)):
            for n in range(step, looks * step + 1, step):
                d = interval(arm_from(a[:n]), arm_from(b[:n]))
                if d.significant:
                    found[name] += 1
                    break
    assert found["welch"] / runs > 0.12  # what repeated looks do to a fixed-sample test
    assert found["always_valid"] / runs <= 0.05


def test_the_always_valid_interval_is_wider_but_still_finds_a_real_difference() -> None:
    control = arm_from(np.full(1000, 600.0) + np.tile([-300, 300], 500))
    worse = arm_from(np.full(1000, 540.0) + np.tile([-300, 300], 500))
    fixed, valid = welch(worse, control), always_valid(worse, control)
    assert fixed.estimate == valid.estimate == pytest.approx(-60.0)
    assert valid.low < fixed.low < fixed.high < valid.high < 0
    assert valid.p_value < 0.05 and valid.p_value > fixed.p_value


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=2, max_value=60))
def test_rate_variances_from_event_by_event_counters_match_the_users(seed: int, users: int) -> None:
    """Hates and skips per play over users, folded in event by event in a random order: the
    delta-method variance from the counters equals the one over the users' own totals."""
    rng = np.random.default_rng(seed)
    kinds = [
        FeedbackType.PLAY,
        FeedbackType.SKIP,
        FeedbackType.COMPLETE,
        FeedbackType.HATE,
        FeedbackType.LOVE,
    ]
    events = [
        (int(u), kinds[int(k)])
        for u, k in zip(rng.integers(0, users, users * 6), rng.integers(0, 5, users * 6), strict=True)
    ]
    counters: dict[str, float] = {}
    totals: dict[int, dict[str, int]] = {}
    for u, kind in events:
        listened = 1000 if kind in (FeedbackType.PLAY, FeedbackType.SKIP, FeedbackType.COMPLETE) else None
        e = FeedbackEvent(user_id=f"u{u}", track_id="t", type=kind, listen_ms=listened)
        before = totals.get(u, {})
        counters = add_to_arm(counters, e, new_user=u not in totals, user_before=before)
        totals[u] = add_to_user(before, e)
    arm = ArmMetrics.from_counters(counters)
    hates = np.array([t["hates"] for t in totals.values()], dtype=float)
    skips = np.array([t["skips"] for t in totals.values()], dtype=float)
    plays = np.array([t["plays"] for t in totals.values()], dtype=float)
    if len(totals) < 2 or plays.sum() == 0:
        assert arm.hate_rate_variance is None
        return
    for rate, x in (("hate", hates), ("skip", skips)):
        ratio = x.sum() / plays.sum()
        expected = ((x - ratio * plays) / plays.mean()).var(ddof=1)
        assert getattr(arm, f"{rate}_rate") == pytest.approx(ratio)
        assert getattr(arm, f"{rate}_rate_variance") == pytest.approx(expected, rel=1e-6, abs=1e-12)
