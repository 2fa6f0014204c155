"""Always-valid confidence sequences: intervals that hold at every look at once.

The rollout controller looks at an experiment every minute or so, from the first handful
of users on. An interval that is valid at one fixed sample size, checked at every look,
excludes the truth far more often than its nominal rate; a confidence sequence does not.

- :func:`t_sequence` is the anytime-valid t-test of Lindon, Ham, Tingley and Bojinov,
  *Anytime-valid linear models and regression adjusted causal inference* (2024): a
  Bayes factor with a normal prior on the effect and the error variance estimated
  from the data. Its boundary uses the t statistic with ``nu`` degrees of freedom, so it
  is wide with few users, where a plug-in variance with a normal boundary is too narrow.
  The formula is the one `savvi` implements for regression coefficients (a test checks
  the two agree); it is computed here from sufficient statistics (counts, sums, sums of
  squares), which is all the stream worker keeps, instead of row by row.
- :func:`mean_sequence` and :func:`difference_sequence` apply it to a mean over users and
  to the difference of two arms' means (a two-group regression: intercept and arm).
- :func:`rate_exceeds` is an exact one-sided test that a Bernoulli rate exceeds a
  threshold (a mixture likelihood ratio over rates above it, uniform prior), valid at
  every sample size by Ville's inequality: for error and slow-answer rates.

``phi`` is the prior's precision in units of the per-user variance: ``1 / d**2`` for a
standardised effect ``d`` the interval should resolve best (:func:`phi_for`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import special

MAX_LOG_BF = 700.0


@dataclass(frozen=True)
class Interval:
    """An estimate with its always-valid interval and the matching p-value."""

    estimate: float
    low: float
    high: float
    p_value: float
    """``min(1, 1 / Bayes factor)`` at this look: below ``alpha`` exactly when the interval
    excludes zero."""


@dataclass(frozen=True)
class Sample:
    """What is known of one group of users: count, mean and sample variance (``n - 1``)."""

    n: int
    mean: float
    variance: float

    @classmethod
    def from_sums(cls, n: int, total: float, total_sq: float) -> Sample:
        """From the count, the sum and the sum of squares of per-user values."""
        mean = total / n if n else 0.0
        variance = max(0.0, (total_sq - n * mean**2) / (n - 1)) if n > 1 else 0.0
        return cls(n, mean, variance)


def phi_for(effect: float) -> float:
    """The prior precision that tunes the interval to a standardised effect ``effect``."""
    if effect <= 0:
        raise ValueError("the standardised effect must be positive")
    return 1.0 / effect**2


def log_bayes_factor(t2: float, nu: float, phi: float, z2: float) -> float:
    """The log Bayes factor against "no effect" of Lindon et al. (2024), Theorem 3.3.

    Parameters
    ----------
    t2 : float
        The squared t statistic of the effect.
    nu : float
        Residual degrees of freedom.
    phi : float
        Prior precision of the effect, in units of the error variance.
    z2 : float
        The error variance over the effect's variance (``n`` for a mean).
    """
    r = phi / (phi + z2)
    return 0.5 * math.log(r) + 0.5 * (nu + 1) * (math.log1p(t2 / nu) - math.log1p(r * t2 / nu))


def t_sequence(
    *, estimate: float, standard_error: float, z2: float, nu: float, alpha: float, phi: float
) -> Interval:
    """The anytime-valid t confidence sequence around ``estimate`` at level ``1 - alpha``.

    With ``nu <= 0`` or no variance estimate the interval is the whole line: nothing is
    known yet.
    """
    if nu <= 0 or standard_error <= 0 or not math.isfinite(standard_error):
        return Interval(estimate, -math.inf, math.inf, 1.0)
    r = phi / (phi + z2)
    q = (r * alpha**2) ** (1.0 / (nu + 1))
    radius = (
        standard_error * math.sqrt(nu * (1.0 - q) / (q - r)) if q > r else math.inf
    )  # q <= r only when alpha is larger than the prior allows
    t2 = (estimate / standard_error) ** 2
    p_value = math.exp(-min(max(log_bayes_factor(t2, nu, phi, z2), 0.0), MAX_LOG_BF))
    return Interval(estimate, estimate - radius, estimate + radius, p_value)


def mean_sequence(*, n: int, total: float, total_sq: float, alpha: float, phi: float) -> Interval:
    """Always-valid interval for the mean of i.i.d. per-user values, from their sums.

    Parameters
    ----------
    n : int
        Users.
    total, total_sq : float
        The sum of their values and of their squares.
    alpha : float
        Error rate over all looks (``0.05`` for 95%).
    phi : float
        Prior precision (:func:`phi_for`).
    """
    sample = Sample.from_sums(n, total, total_sq)
    se = math.sqrt(sample.variance / n) if n > 1 else math.inf
    return t_sequence(estimate=sample.mean, standard_error=se, z2=float(n), nu=n - 2, alpha=alpha, phi=phi)


def difference_sequence(treatment: Sample, control: Sample, *, alpha: float, phi: float) -> Interval:
    """Always-valid interval for treatment's mean minus control's.

    The two-group regression of Lindon et al.: its residual variance pools both groups
    (``nu = n_t + n_c - 3``, as for an intercept and one arm indicator). The standard
    error is the larger of the pooled one and Welch's unpooled one, so unequal variances
    never make the interval narrower than either.
    """
    n_t, n_c = treatment.n, control.n
    if n_t < 2 or n_c < 2:
        return Interval(treatment.mean - control.mean, -math.inf, math.inf, 1.0)
    pooled = ((n_t - 1) * treatment.variance + (n_c - 1) * control.variance) / (n_t + n_c - 2)
    scale = 1.0 / n_t + 1.0 / n_c
    se2 = max(pooled * scale, treatment.variance / n_t + control.variance / n_c)
    estimate = treatment.mean - control.mean
    if se2 <= 0:
        return Interval(estimate, estimate, estimate, 1.0 if estimate == 0 else 0.0)
    return t_sequence(
        estimate=estimate,
        standard_error=math.sqrt(se2),
        z2=pooled / se2 if pooled > 0 else 1.0 / scale,
        nu=n_t + n_c - 3,
        alpha=alpha,
        phi=phi,
    )


def _log_mixture(successes: int, trials: int, threshold: float) -> float:
    """log of the mixture likelihood ratio of rates above ``threshold`` (uniform prior) against
    ``threshold`` itself."""
    failures = trials - successes
    tail = special.betaincc(successes + 1, failures + 1, threshold)
    if tail <= 0:
        return -math.inf
    return float(
        special.betaln(successes + 1, failures + 1)
        + math.log(tail)
        - math.log1p(-threshold)
        - special.xlogy(successes, threshold)
        - special.xlog1py(failures, -threshold)
    )


def rate_exceeds(successes: int, trials: int, threshold: float, *, alpha: float) -> bool:
    """Whether a Bernoulli rate is above ``threshold`` with confidence ``1 - alpha``, at
    any number of looks (the mixture likelihood ratio is a supermartingale under every
    rate at or below the threshold)."""
    if trials <= 0 or not 0 < threshold < 1:
        return False
    return _log_mixture(successes, trials, threshold) >= math.log(1.0 / alpha)


def rate_lower_bound(successes: int, trials: int, *, alpha: float, tolerance: float = 1e-6) -> float:
    """The smallest threshold :func:`rate_exceeds` cannot reject: an always-valid lower
    confidence bound of the rate (0 when nothing is shown)."""
    if trials <= 0 or not rate_exceeds(successes, trials, tolerance, alpha=alpha):
        return 0.0
    low, high = tolerance, successes / trials
    while high - low > tolerance:
        middle = (low + high) / 2
        if rate_exceeds(successes, trials, middle, alpha=alpha):
            low = middle
        else:
            high = middle
    return low
