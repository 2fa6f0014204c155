"""Team-draft interleaving: two rankers merged into one list, and which one users prefer.

The rollout's optional first rung (``recsys rollout set --mode interleave``): a user in the
experiment's share gets one list merged from the treatment's and production's by team draft
(Chapelle, Joachims, Radlinski and Yue, *Large-scale validation and analysis of interleaved
search evaluation*, 2012). In each round a coin decides which ranker picks first; each ranker
then adds its highest-ranked track not already in the list, and the pick is credited to it.
The coins are drawn from a hash of the request, so a merge can be reproduced from the
impression log.

Each user's listening is credited to the version that contributed the track (the stream
worker keeps the sums, :data:`recsys.experiments.aggregates.CREDIT_COUNTERS`); a user's preference is
``d = (L_t - L_c) / (L_t + L_c)`` and the experiment's is the mean of ``d`` over users, the
unit of randomisation, judged with an always-valid confidence sequence
(:func:`.confidence_sequences.mean_sequence`). Users prefer the treatment with confidence: it
goes on to the A/B ladder at 1% (interleaving tells which ranker users prefer, not how much
listening it earns). They prefer production: it is retired.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from recsys.experiments.aggregates import CREDITED_USERS, LISTEN_SHARE, LISTEN_SHARE_SQ, total
from recsys.experiments.analysis import STANDARDISED_EFFECT, ArmMetrics, rate_difference
from recsys.experiments.confidence_sequences import Interval, mean_sequence, phi_for
from recsys.experiments.controller import Action, Decision, GuardrailCheck
from recsys.registry.plan import INTERLEAVE, STAGES, Experiment

FIRST, SECOND = 0, 1
"""The two teams of a merge: the first ranker given (the treatment) and the second."""
PREFERENCE = "preference"
"""The metric of the interleaving decision (:class:`recsys.experiments.controller.GuardrailCheck`)."""
HATE_RATE = "hate_rate"
AB_START = STAGES[0]
"""Where a preferred treatment goes next: the A/B ladder's first share."""
RULES = 2
"""Rules that share the experiment's error rate: the preference and the hate rate."""
COIN_BITS = 256
"""Coins one hash gives (sha256); longer merges hash again with a counter."""


@dataclass(frozen=True)
class Interleaved:
    """A merged list and, per track, the team that contributed it (:data:`FIRST` or :data:`SECOND`)."""

    tracks: list[str]
    teams: list[int]


def coins(seed: str) -> Iterator[bool]:
    """An endless, reproducible sequence of fair coins drawn from ``seed``: ``True`` means the
    first ranker picks first in that round."""
    block = 0
    while True:
        digest = int.from_bytes(hashlib.sha256(f"{seed}\x00{block}".encode()).digest(), "big")
        for bit in range(COIN_BITS):
            yield bool(digest >> bit & 1)
        block += 1


def team_draft(
    first: Sequence[str], second: Sequence[str], *, seed: str, k: int | None = None
) -> Interleaved:
    """Merge two rankings by team draft.

    Parameters
    ----------
    first, second : sequence of str
        The two rankings, best first (each without duplicates).
    seed : str
        What the coins are drawn from: the same seed gives the same merge (the request id).
    k : int, optional
        Length of the merged list (default: every distinct track of both).

    Returns
    -------
    Interleaved
        Round by round, a coin picks which ranker goes first; each adds its best track not
        yet in the list, credited to its team. A ranker with nothing left to add is skipped.
    """
    limit = len(first) + len(second) if k is None else k
    rankings = (first, second)
    cursors = [0, 0]
    taken: set[str] = set()
    tracks: list[str] = []
    teams: list[int] = []
    flips = coins(seed)
    while len(tracks) < limit:
        order = (FIRST, SECOND) if next(flips) else (SECOND, FIRST)
        picked = False
        for team in order:
            if len(tracks) >= limit:
                break
            ranking = rankings[team]
            cursors[team] = _best_left(ranking, cursors[team], taken)
            if cursors[team] < len(ranking):
                taken.add(ranking[cursors[team]])
                tracks.append(ranking[cursors[team]])
                teams.append(team)
                picked = True
        if not picked:
            break
    return Interleaved(tracks, teams)


def _best_left(ranking: Sequence[str], cursor: int, taken: set[str]) -> int:
    """The position of the best track of ``ranking`` from ``cursor`` on that is not taken yet
    (``len(ranking)`` when none is left)."""
    while cursor < len(ranking) and ranking[cursor] in taken:
        cursor += 1
    return cursor


@dataclass(frozen=True)
class Preference:
    """The sums of the users' preferences for the treatment in one interleaving experiment."""

    users: int
    """Users with any credited listening."""
    total: float
    """The sum over them of ``d = (L_t - L_c) / (L_t + L_c)``."""
    total_sq: float
    """The sum of ``d**2``."""


def variant_arms(stats: Mapping[str, Mapping[str, float]], experiment: str) -> dict[str, Mapping[str, float]]:
    """Version -> counters of the arms ``version|NAME:interleave`` (slices left out)."""
    variant = f"{experiment}:{INTERLEAVE}"
    out = {}
    for key, counters in stats.items():
        version, _, arm_variant = key.rpartition("|")
        if arm_variant == variant:
            out[version] = counters
    return out


def credited_arms(stats: Mapping[str, Mapping[str, float]], experiment: Experiment) -> dict[str, ArmMetrics]:
    """``treatment`` and ``control``: what the tracks each version contributed to the experiment's
    lists earned (plays, listening, loves, hates), over the users they were credited to."""
    arms = variant_arms(stats, experiment.name)
    rest = total(counters for version, counters in arms.items() if version != experiment.treatment)
    return {
        "treatment": ArmMetrics.from_counters(arms.get(experiment.treatment, {})),
        "control": ArmMetrics.from_counters(rest),
    }


def preference(stats: Mapping[str, Mapping[str, float]], experiment: Experiment) -> Preference:
    """The users' preference for ``experiment``'s treatment, from the worker's arm counters.

    With ``s`` a user's share of credited listening that went to the treatment, ``d = 2 s - 1``,
    so ``sum(d) = 2 S - n`` and ``sum(d**2) = 4 Q - 4 S + n`` from the treatment arm's sums of
    ``s`` (``S``) and ``s**2`` (``Q``) and the experiment's users ``n``.
    """
    arms = variant_arms(stats, experiment.name)
    n = int(sum(counters.get(CREDITED_USERS, 0) for counters in arms.values()))
    treated = arms.get(experiment.treatment, {})
    shares, squares = float(treated.get(LISTEN_SHARE, 0.0)), float(treated.get(LISTEN_SHARE_SQ, 0.0))
    return Preference(n, 2 * shares - n, max(0.0, 4 * squares - 4 * shares + n))


@dataclass(frozen=True)
class InterleavingRules:
    """When an interleaving experiment is decided."""

    min_users: int = 100
    """Users with credited listening before anything but a guardrail is decided."""
    alpha: float = 0.05
    """The chance, over all looks, of a wrong verdict; split equally between the two rules."""
    effect: float = STANDARDISED_EFFECT
    """The standardised preference (mean of ``d`` over its standard deviation) the
    confidence sequence resolves best (:func:`recsys.experiments.confidence_sequences.phi_for`)."""
    max_hate_rate_increase: float = 0.01
    """Hates per play on the treatment's tracks may exceed those on production's by this much."""


def preference_interval(found: Preference, rules: InterleavingRules) -> Interval:
    """The always-valid interval of the mean preference for the treatment."""
    return mean_sequence(
        n=found.users,
        total=found.total,
        total_sq=found.total_sq,
        alpha=rules.alpha / RULES,
        phi=phi_for(rules.effect),
    )


def decide_interleaving(
    experiment: Experiment,
    counters: Mapping[str, Mapping[str, float]],
    *,
    rules: InterleavingRules | None = None,
) -> Decision:
    """The controller's decision for an interleaving experiment now.

    Parameters
    ----------
    experiment : Experiment
        The experiment (mode ``interleave``).
    counters : mapping
        The stream worker's arm counters (``GET /stats/``: ``version|variant`` -> counters).
    rules : InterleavingRules, optional
        Thresholds (defaults otherwise).

    Returns
    -------
    Decision
        ``rollback`` at once when the treatment's tracks draw more hates per play than
        production's by more than the margin, with confidence; ``hold`` while fewer than
        ``min_users`` users have credited listening; then ``advance`` to the A/B ladder at 1%
        when the interval of the mean preference lies above 0 (the caller switches the
        experiment to mode ``ab``), ``rollback`` when it lies below, else ``hold``.
    """
    r = rules or InterleavingRules()
    if experiment.paused:
        return Decision(Action.HOLD, experiment.share, ["paused"])
    arms = credited_arms(counters, experiment)
    treated, rest = arms["treatment"], arms["control"]
    checks = _hate_check(treated, rest, r)
    found = preference(counters, experiment)
    interval = preference_interval(found, r)
    checks.append(_preference_check(interval, treated, rest, r))
    broken = [_describe(c) for c in checks if c.breached and c.metric == HATE_RATE]
    if broken:
        return Decision(Action.ROLLBACK, 0.0, broken, checks=checks)
    summary = f"{found.users} users: {_describe(checks[-1])}"
    if found.users < r.min_users:
        reasons = [f"{found.users} users with credited listening (need {r.min_users})"]
        return Decision(Action.HOLD, experiment.share, reasons, checks=checks)
    if interval.low > 0:
        reasons = [f"{summary}: users prefer the treatment", f"interleaving -> A/B at {AB_START:.0%}"]
        return Decision(Action.ADVANCE, AB_START, reasons, checks=checks)
    if interval.high < 0:
        return Decision(Action.ROLLBACK, 0.0, [f"{summary}: users prefer production"], checks=checks)
    return Decision(Action.HOLD, experiment.share, [f"{summary}: no preference shown yet"], checks=checks)


def _preference_check(
    interval: Interval, treated: ArmMetrics, rest: ArmMetrics, r: InterleavingRules
) -> GuardrailCheck:
    return GuardrailCheck(
        metric=PREFERENCE,
        estimate=interval.estimate,
        low=interval.low,
        high=interval.high,
        margin=0.0,
        alpha=r.alpha / RULES,
        treatment_users=treated.users,
        control_users=rest.users,
        breached=interval.high < 0,
    )


def _hate_check(treated: ArmMetrics, rest: ArmMetrics, r: InterleavingRules) -> list[GuardrailCheck]:
    """Hates per play on each version's tracks, with the two-group interval over users. Both
    sides hold the same users; where a user's hates on one side go with their hates on the
    other (a listener who hates much), that interval is wider than a paired one would be."""
    if min(treated.users, rest.users) < 2:
        return []
    found = rate_difference(treated, rest, "hate", confidence=1.0 - r.alpha / RULES)
    if found is None:
        return []
    return [
        GuardrailCheck(
            metric=HATE_RATE,
            estimate=found.estimate,
            low=found.low,
            high=found.high,
            margin=r.max_hate_rate_increase,
            alpha=r.alpha / RULES,
            treatment_users=treated.users,
            control_users=rest.users,
            breached=found.low > r.max_hate_rate_increase,
        )
    ]


def _describe(check: GuardrailCheck) -> str:
    label = f"always-valid {1 - check.alpha:.1%} CI"
    if check.metric == PREFERENCE:
        interval = f"{label} {check.low:+.3f}..{check.high:+.3f}"
        return f"preference for the treatment {check.estimate:+.3f} ({interval})"
    return (
        f"hate rate on the treatment's tracks {check.estimate:+.4f} per play ({label} "
        f"{check.low:+.4f}..{check.high:+.4f}, margin {check.margin:+.4f})"
    )
