"""Always-valid confidence sequences: known answers, coverage over repeated looks, exact rate tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from savvi.linear_regression import LinearRegression
from scipy import integrate, stats

from recsys.experiments.analysis import ArmMetrics, ratio_variance, sequential_difference, welch
from recsys.experiments.confidence_sequences import (
    Sample,
    difference_sequence,
    mean_sequence,
    phi_for,
    rate_exceeds,
    rate_lower_bound,
)


def savvi_fit(treated: np.ndarray, control: np.ndarray, phi: float) -> LinearRegression:
    """savvi's anytime-valid regression fed one user at a time: intercept and arm indicator."""
    model = LinearRegression(0.05, 2, phi=phi)
    for y, arm in [(y, 1.0) for y in treated] + [(y, 0.0) for y in control]:
        model.update(np.array([y, 1.0, arm]))
    return model


@pytest.mark.parametrize(("n", "effect", "seed"), [(60, 0.5, 0), (200, 0.1, 1), (500, 0.3, 2), (45, 1.0, 3)])
def test_the_two_arm_sequence_matches_savvi_on_the_same_users(n: int, effect: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    treated, control = rng.normal(10 + effect, 2.0, n), rng.normal(10, 2.0, n + seed * 7)
    phi = phi_for(0.2)
    reference = savvi_fit(treated, control, phi)
    ours = difference_sequence(
        Sample(len(treated), treated.mean(), treated.var(ddof=1)),
        Sample(len(control), control.mean(), control.var(ddof=1)),
        alpha=0.05,
        phi=phi,
    )
    low, high = reference.calculate_conf_int()[1]
    assert ours.estimate == pytest.approx(reference.beta[1], rel=1e-6)
    # savvi's pooled standard error; ours takes Welch's when that is larger, so compare
    # where the two agree (equal spreads) and check ours is never narrower
    assert ours.high - ours.low >= (high - low) * (1 - 1e-6)
    pooled_is_used = treated.var(ddof=1) / len(treated) + control.var(ddof=1) / len(control) <= (
        ((len(treated) - 1) * treated.var(ddof=1) + (len(control) - 1) * control.var(ddof=1))
        / (len(treated) + len(control) - 2)
        * (1 / len(treated) + 1 / len(control))
    )
    if pooled_is_used:
        assert (ours.low, ours.high) == pytest.approx((low, high), rel=1e-5)
        assert ours.p_value == pytest.approx(min(1.0, reference.calculate_p_value()[1]), rel=1e-5)


def test_the_mean_sequence_matches_savvi_for_an_intercept_only_model() -> None:
    rng = np.random.default_rng(7)
    values = rng.exponential(3.0, 300)
    model = LinearRegression(0.05, 1, phi=phi_for(0.3))
    for y in values:
        model.update(np.array([y, 1.0]))
    ours = mean_sequence(
        n=len(values), total=values.sum(), total_sq=(values**2).sum(), alpha=0.05, phi=phi_for(0.3)
    )
    assert (ours.low, ours.high) == pytest.approx(tuple(model.calculate_conf_int()[0]), rel=1e-5)


@given(
    st.integers(min_value=2, max_value=400),
    st.integers(min_value=2, max_value=400),
    st.floats(min_value=0.1, max_value=10.0),
    st.floats(min_value=0.1, max_value=10.0),
)
@settings(max_examples=200, deadline=None)
def test_never_narrower_than_one_fixed_look(n_t: int, n_c: int, sd_t: float, sd_c: float) -> None:
    treated = ArmMetrics(n_t, 600.0, sd_t**2, 1.0, 0.0, 0.0, 0.0)
    control = ArmMetrics(n_c, 590.0, sd_c**2, 1.0, 0.0, 0.0, 0.0)
    fixed = welch(treated, control)
    valid = sequential_difference(treated.listening, control.listening, confidence=0.95)
    assert valid.low <= fixed.low + 1e-9 and valid.high >= fixed.high - 1e-9


def test_with_three_and_six_users_nothing_is_known_yet() -> None:
    found = sequential_difference(Sample(3, 100.0, 300.0**2), Sample(6, 200.0, 300.0**2), confidence=0.95)
    assert math.isinf(found.low) and math.isinf(found.high) and found.p_value == 1.0


@pytest.mark.parametrize(("start", "distribution"), [(2, "normal"), (5, "exponential"), (10, "lognormal")])
def test_coverage_holds_over_every_look_from_the_first_users(start: int, distribution: str) -> None:
    """A/A arms looked at after every new pair of users, from ``start`` users on: the share of
    runs in which any look excludes the true difference (0) stays within alpha; Welch's
    fixed-sample interval at the same looks does not."""
    rng = np.random.default_rng(start)
    runs, users = 300, 400
    draw = {
        "normal": lambda size: rng.normal(600.0, 300.0, size),
        "exponential": lambda size: rng.exponential(600.0, size),
        "lognormal": lambda size: rng.lognormal(6.0, 1.0, size),
    }[distribution]
    excluded = {"sequence": 0, "welch": 0}
    for _ in range(runs):
        a, b = draw(users), draw(users)
        n = np.arange(1, users + 1)
        mean_a, mean_b = np.cumsum(a) / n, np.cumsum(b) / n
        var_a = (np.cumsum(a**2) - n * mean_a**2) / np.maximum(n - 1, 1)
        var_b = (np.cumsum(b**2) - n * mean_b**2) / np.maximum(n - 1, 1)
        seen = {"sequence": False, "welch": False}
        for k in range(max(start, 2), users + 1, 2):
            ta = Sample(k, mean_a[k - 1], max(var_a[k - 1], 0.0))
            tb = Sample(k, mean_b[k - 1], max(var_b[k - 1], 0.0))
            found = sequential_difference(ta, tb, confidence=0.95)
            seen["sequence"] |= found.low > 0 or found.high < 0
            se = math.sqrt((ta.variance + tb.variance) / k)
            seen["welch"] |= abs(ta.mean - tb.mean) > stats.t.ppf(0.975, 2 * k - 2) * se
        for name in seen:
            excluded[name] += seen[name]
    assert excluded["sequence"] / runs <= 0.05
    assert excluded["welch"] / runs > 0.15


def test_the_rate_mixture_is_the_integral_it_stands_for() -> None:
    for successes, trials, threshold in ((5, 100, 0.01), (12, 200, 0.02), (30, 1000, 0.01), (3, 3, 0.5)):
        integral, _ = integrate.quad(
            lambda p, s=successes, n=trials: (p**s) * ((1 - p) ** (n - s)), threshold, 1.0, epsabs=0
        )
        ratio = integral / (1 - threshold) / (threshold**successes * (1 - threshold) ** (trials - successes))
        assert rate_exceeds(successes, trials, threshold, alpha=min(1.0, 1.001 / ratio))
        assert not rate_exceeds(successes, trials, threshold, alpha=0.999 / ratio)
    assert not rate_exceeds(0, 50, 0.02, alpha=0.999)  # no success: no evidence of a higher rate


@pytest.mark.parametrize(("rate", "threshold"), [(0.01, 0.01), (0.005, 0.01), (0.05, 0.05)])
def test_a_rate_at_or_below_its_threshold_is_rarely_ever_flagged(rate: float, threshold: float) -> None:
    rng = np.random.default_rng(int(rate * 1000))
    runs, flagged = 300, 0
    for _ in range(runs):
        outcomes = rng.random(3000) < rate
        successes = np.cumsum(outcomes)
        flagged += any(
            rate_exceeds(int(successes[n - 1]), n, threshold, alpha=0.05) for n in range(50, 3001, 50)
        )
    assert flagged / runs <= 0.05


def test_a_rate_well_above_its_threshold_is_flagged_and_bounded_below() -> None:
    assert rate_exceeds(40, 1000, 0.01, alpha=0.01)
    low = rate_lower_bound(40, 1000, alpha=0.01)
    assert 0.01 < low < 0.04
    assert rate_exceeds(40, 1000, low * 0.99, alpha=0.01) and not rate_exceeds(
        40, 1000, low * 1.01, alpha=0.01
    )
    assert rate_lower_bound(0, 1000, alpha=0.05) == 0.0 and not rate_exceeds(2, 20, 0.01, alpha=0.05)


@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=2, max_value=300))
@settings(max_examples=50, deadline=None)
def test_the_delta_method_variance_from_sums_matches_the_users(seed: int, users: int) -> None:
    rng = np.random.default_rng(seed)
    plays = 1 + rng.poisson(5, users)
    hates = rng.binomial(plays, rng.beta(1, 20, users))
    counters = {
        "users": users,
        "hates": hates.sum(),
        "plays": plays.sum(),
        "hates_sq": (hates**2).sum(),
        "hates_plays": (hates * plays).sum(),
        "plays_sq": (plays**2).sum(),
    }
    ratio = hates.sum() / plays.sum()
    linearised = (hates - ratio * plays) / plays.mean()
    found = ratio_variance(counters, "hates", "plays")
    assert found == pytest.approx(linearised.var(ddof=1), rel=1e-6, abs=1e-12)
    assert ratio_variance({k: v for k, v in counters.items() if k != "hates_sq"}, "hates", "plays") is None
