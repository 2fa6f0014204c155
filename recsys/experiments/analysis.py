"""Experiment statistics over users, from the stream worker's per-arm counters.

The unit of randomisation is the user. Listening time per user is a mean over users: each
arm's counters hold its user count, the sum of per-user listening and the sum of its
squares (:data:`recsys.experiments.aggregates.PRODUCTS`), which give the per-user mean and variance
without a list of users. Hate and skip rates are per play, a ratio of two sums over users;
their variance over users comes from the delta method (Deng, Knoblich and Lu, KDD 2018)
using the sums of each user's hates, plays, their squares and their product.

Both kinds are compared with the always-valid confidence sequence of
:mod:`recsys.experiments.confidence_sequences`, which holds however often the controller looks; Welch's
fixed-sample interval is reported beside it. The sample-ratio-mismatch check compares
the users each arm got with the shares the rollout plan gave them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import stats

from recsys.errors import InvalidRequest
from recsys.experiments.confidence_sequences import Sample, difference_sequence, phi_for

CONFIDENCE = 0.95
STANDARDISED_EFFECT = 0.1
"""The always-valid intervals are tuned to resolve a difference of a tenth of a standard
deviation over users: about what a 1% or 2% step's few hundred users per arm can show."""
RATES = ("hate", "skip")
"""Per-play rates with a per-user (delta method) variance: ``hate_rate``, ``skip_rate``."""
SRM_ALPHA = 0.001
"""A sample-ratio mismatch is flagged below this p-value (the usual, strict threshold:
the check runs at every look, and a true mismatch gives p-values far smaller)."""


@dataclass(frozen=True)
class ArmMetrics:
    """One arm, per user and per play."""

    users: int
    listen_s_per_user: float
    listen_s_variance: float
    """Variance over users of their listening seconds (sample variance, n - 1)."""
    plays_per_user: float
    love_rate: float
    hate_rate: float
    skip_rate: float
    hate_rate_variance: float | None = None
    """Variance over users of each user's linearised contribution to the hate rate (delta
    method, sample variance); ``None`` when the counters lack the per-user sums."""
    skip_rate_variance: float | None = None
    """The same for the skip rate."""

    def rate(self, name: str) -> Sample | None:
        """``hate`` or ``skip`` rate per play as a :class:`.confidence_sequences.Sample` over users
        (``None`` when its variance is unknown)."""
        variance = getattr(self, f"{name}_rate_variance")
        if variance is None:
            return None
        return Sample(self.users, float(getattr(self, f"{name}_rate")), float(variance))

    @property
    def listening(self) -> Sample:
        """Listening seconds per user as a :class:`~recsys.experiments.confidence_sequences.Sample`."""
        return Sample(self.users, self.listen_s_per_user, self.listen_s_variance)

    @classmethod
    def from_counters(cls, counters: Mapping[str, float]) -> ArmMetrics:
        """From one arm's counters (``GET /stats/`` of the stream worker)."""
        users = int(counters.get("users", 0))
        plays = float(counters.get("plays", 0))
        listen_s = float(counters.get("listen_ms", 0)) / 1000.0
        mean = listen_s / users if users else 0.0
        variance = (
            max(0.0, (float(counters.get("listen_s_sq", 0)) - users * mean**2) / (users - 1))
            if users > 1
            else 0.0
        )
        return cls(
            users=users,
            listen_s_per_user=mean,
            listen_s_variance=variance,
            plays_per_user=plays / users if users else 0.0,
            love_rate=float(counters.get("loves", 0)) / plays if plays else 0.0,
            hate_rate=float(counters.get("hates", 0)) / plays if plays else 0.0,
            skip_rate=float(counters.get("skips", 0)) / plays if plays else 0.0,
            hate_rate_variance=ratio_variance(counters, "hates", "plays"),
            skip_rate_variance=ratio_variance(counters, "skips", "plays"),
        )


def ratio_variance(counters: Mapping[str, float], numerator: str, denominator: str) -> float | None:
    """Variance over users of their linearised contribution to ``sum(x) / sum(y)``.

    With ``R`` the ratio and ``ybar`` the mean denominator per user, user ``i`` contributes
    ``(x_i - R y_i) / ybar`` (the delta method's linearisation); its sample variance
    ``(Sxx - 2 R Sxy + R^2 Syy) / ((n - 1) ybar^2)`` needs only the sums, squares and cross
    products of ``x`` and ``y`` over users (:data:`recsys.experiments.aggregates.PRODUCTS`). ``None``
    when the counters lack them, or with fewer than two users or no denominator.
    """
    names = (f"{numerator}_sq", f"{numerator}_{denominator}", f"{denominator}_sq")
    n = int(counters.get("users", 0))
    if n < 2 or any(name not in counters for name in names):
        return None
    x, y = float(counters.get(numerator, 0)), float(counters.get(denominator, 0))
    if y <= 0:
        return None
    xx, xy, yy = (float(counters[name]) for name in names)
    ratio, y_bar = x / y, y / n
    sxx, sxy, syy = xx - x * x / n, xy - x * y / n, yy - y * y / n
    return max(0.0, (sxx - 2 * ratio * sxy + ratio**2 * syy) / ((n - 1) * y_bar**2))


@dataclass(frozen=True)
class Difference:
    """Treatment minus control, with its confidence interval and two-sided p-value."""

    estimate: float
    low: float
    high: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def welch(treatment: ArmMetrics, control: ArmMetrics, *, confidence: float = CONFIDENCE) -> Difference:
    """Difference in listening seconds per user, Welch's t-test (unequal variances).

    Raises
    ------
    InvalidRequest
        With fewer than two users in an arm.
    """
    estimate, a, b = _difference_parts(treatment, control)
    se = math.sqrt(a + b)
    if se == 0:
        return Difference(estimate, estimate, estimate, 1.0 if estimate == 0 else 0.0)
    df = (a + b) ** 2 / (a**2 / (treatment.users - 1) + b**2 / (control.users - 1))
    margin = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p_value = float(2 * stats.t.sf(abs(estimate) / se, df))
    return Difference(estimate, estimate - margin, estimate + margin, p_value)


def _difference_parts(treatment: ArmMetrics, control: ArmMetrics) -> tuple[float, float, float]:
    """The difference of the means and each mean's variance (over users)."""
    if treatment.users < 2 or control.users < 2:
        raise InvalidRequest("each arm needs at least two users for a confidence interval")
    estimate = treatment.listen_s_per_user - control.listen_s_per_user
    return (
        estimate,
        treatment.listen_s_variance / treatment.users,
        control.listen_s_variance / control.users,
    )


def always_valid(
    treatment: ArmMetrics,
    control: ArmMetrics,
    *,
    confidence: float = CONFIDENCE,
    effect: float = STANDARDISED_EFFECT,
) -> Difference:
    """Difference in listening seconds per user with an always-valid confidence interval.

    The anytime-valid t confidence sequence (:func:`.confidence_sequences.difference_sequence`):
    it holds with probability ``confidence`` at every look at once, and with few users it is
    the whole line rather than a guess. It is never narrower than Welch's fixed-sample
    interval at the same confidence, since no interval valid over every look can be.

    Raises
    ------
    InvalidRequest
        With fewer than two users in an arm.
    """
    return sequential_difference(treatment.listening, control.listening, confidence=confidence, effect=effect)


def rate_difference(
    treatment: ArmMetrics,
    control: ArmMetrics,
    rate: str,
    *,
    confidence: float = CONFIDENCE,
    effect: float = STANDARDISED_EFFECT,
) -> Difference | None:
    """Difference in a per-play rate (``hate`` or ``skip``) with an always-valid interval over
    users (delta method); ``None`` when an arm's counters lack the per-user sums.

    Raises
    ------
    InvalidRequest
        With fewer than two users in an arm.
    """
    t, c = treatment.rate(rate), control.rate(rate)
    if t is None or c is None:
        return None
    return sequential_difference(t, c, confidence=confidence, effect=effect)


def sequential_difference(
    treatment: Sample, control: Sample, *, confidence: float, effect: float = STANDARDISED_EFFECT
) -> Difference:
    """Treatment's mean minus control's, with the always-valid interval widened to Welch's
    fixed-sample one where that is wider.

    Raises
    ------
    InvalidRequest
        With fewer than two users in an arm.
    """
    if treatment.n < 2 or control.n < 2:
        raise InvalidRequest("each arm needs at least two users for a confidence interval")
    alpha = 1.0 - confidence
    found = difference_sequence(treatment, control, alpha=alpha, phi=phi_for(effect))
    a, b = treatment.variance / treatment.n, control.variance / control.n
    if a + b <= 0:
        return Difference(found.estimate, found.low, found.high, found.p_value)
    df = (a + b) ** 2 / (a**2 / (treatment.n - 1) + b**2 / (control.n - 1))
    fixed = float(stats.t.ppf(1 - alpha / 2, df)) * math.sqrt(a + b)
    return Difference(
        found.estimate,
        min(found.low, found.estimate - fixed),
        max(found.high, found.estimate + fixed),
        found.p_value,
    )


def sample_ratio_mismatch(users: Mapping[str, int], shares: Mapping[str, float]) -> float:
    """p-value of the users each arm got against the shares it was given (chi-square).

    Parameters
    ----------
    users : mapping
        Arm -> users assigned (counted).
    shares : mapping
        Arm -> intended share of traffic; normalised over the arms given.
    """
    if any(users.get(arm, 0) > 0 for arm, share in shares.items() if share <= 0):
        return 0.0  # users in an arm that was given none
    arms = sorted(arm for arm, share in shares.items() if share > 0)
    observed = [float(users.get(arm, 0)) for arm in arms]
    n, weight = sum(observed), sum(shares[arm] for arm in arms)
    if n == 0 or weight <= 0:
        return 1.0
    expected = [n * shares[arm] / weight for arm in arms]
    return float(stats.chisquare(observed, expected).pvalue)


def mean_interval(arm: ArmMetrics, *, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Confidence interval of an arm's listening seconds per user (t over users)."""
    if arm.users < 2:
        return arm.listen_s_per_user, arm.listen_s_per_user
    margin = float(stats.t.ppf(0.5 + confidence / 2, arm.users - 1)) * math.sqrt(
        arm.listen_s_variance / arm.users
    )
    return arm.listen_s_per_user - margin, arm.listen_s_per_user + margin


@dataclass(frozen=True)
class Comparison:
    """An experiment's two arms compared: what the controller decides on, and reports show."""

    listening: Difference | None
    """Welch's fixed-sample interval (``None`` with fewer than two users in an arm)."""
    sequential: Difference | None
    """The always-valid interval."""
    srm_p_value: float | None
    """``None`` at 100%: there is no control slice left, and the arms' counts since the start
    no longer have to match."""


def compare(treatment: ArmMetrics, control: ArmMetrics, *, share: float) -> Comparison:
    """Both listening intervals and the sample-ratio check of an experiment at ``share``
    (its control slice is as large as the treatment up to 100%)."""
    enough = min(treatment.users, control.users) >= 2
    srm = (
        sample_ratio_mismatch(
            {"treatment": treatment.users, "control": control.users}, {"treatment": 1.0, "control": 1.0}
        )
        if share < 1.0
        else None
    )
    return Comparison(
        welch(treatment, control) if enough else None,
        always_valid(treatment, control) if enough else None,
        srm,
    )
