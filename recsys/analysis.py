"""Experiment statistics over users, from the stream worker's per-arm counters.

The unit of randomisation is the user, so the primary metric, listening time per user, is
compared with Welch's t-test over users: each arm's counters hold its user count, the sum
of per-user listening and the sum of its squares (:data:`recsys.aggregates.SQUARES`), which
give the per-user mean and variance without a list of users. Rates (love, hate, skip) are
per play. The sample-ratio-mismatch check compares the users each arm got with the shares
the rollout plan gave them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import stats

from recsys.errors import InvalidRequest

CONFIDENCE = 0.95
MIXTURE_EFFECT = 0.05
"""The always-valid interval is tuned to resolve effects of about 5% of listening time."""
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
        )


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
    effect: float = MIXTURE_EFFECT,
) -> Difference:
    """Difference in listening seconds per user with an always-valid confidence interval.

    The rollout controller looks at an experiment again and again as users accumulate; a
    fixed-sample interval checked at every look rolls back an equal treatment far more
    often than its nominal 5%. This is the mixture sequential probability ratio test's
    confidence sequence (normal mixture; Johari, Pekelis & Walsh, *Always valid inference*,
    2017): with the difference's variance ``V`` and a mixing variance ``tau^2``, the
    interval is the estimate plus or minus
    ``sqrt(2 V (V + tau^2) / tau^2 * (ln(1/alpha) + ln((V + tau^2) / V) / 2))``, and holds with
    probability ``confidence`` at every look at once. ``tau`` is ``effect`` times control's
    mean: the interval is narrowest when the data can just resolve an effect of that size.
    The p-value is ``min(1, 1 / likelihood ratio)``.

    Raises
    ------
    InvalidRequest
        With fewer than two users in an arm.
    """
    estimate, a, b = _difference_parts(treatment, control)
    v = a + b
    tau2 = (effect * control.listen_s_per_user) ** 2 or 1.0
    if v == 0:
        return Difference(estimate, estimate, estimate, 1.0 if estimate == 0 else 0.0)
    alpha = 1.0 - confidence
    radius = math.sqrt(2 * v * (v + tau2) / tau2 * (math.log(1 / alpha) + 0.5 * math.log((v + tau2) / v)))
    log_ratio = 0.5 * math.log(v / (v + tau2)) + tau2 * estimate**2 / (2 * v * (v + tau2))
    p_value = 1.0 if log_ratio <= 0 else math.exp(-min(log_ratio, 700.0))
    return Difference(estimate, estimate - radius, estimate + radius, p_value)


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
