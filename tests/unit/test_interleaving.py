"""Team-draft interleaving: the merge, the stream worker's credit arithmetic, and the decision."""

from __future__ import annotations

import math
import random
import shutil
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.events.schemas import FeedbackEvent
from recsys.events.weights import FeedbackType
from recsys.experiments.aggregates import CREDITED_USERS, LISTEN_SHARE, LISTEN_SHARE_SQ, credit_changes
from recsys.experiments.arms import apply_decision, live_look
from recsys.experiments.confidence_sequences import mean_sequence, phi_for
from recsys.experiments.controller import Action
from recsys.experiments.interleaving import (
    FIRST,
    PREFERENCE,
    SECOND,
    InterleavingRules,
    Preference,
    coins,
    credited_arms,
    decide_interleaving,
    preference,
    team_draft,
)
from recsys.experiments.report.history import history
from recsys.experiments.report.render import render_report
from recsys.registry.plan import Experiment, ExperimentMode
from recsys.registry.store import FileRegistry
from streams.aggregation import Aggregator
from streams.app import arm_totals
from training.pipeline import TrainResult

TREATMENT, PRODUCTION = "2.2", "2.1"
VARIANT = "il:interleave"
EXPERIMENT = Experiment(name="il", treatment=TREATMENT, share=0.01, mode=ExperimentMode.INTERLEAVE)
rankings = st.lists(st.integers(0, 30).map(lambda i: f"t{i}"), unique=True, max_size=25)


# --- the merge ---------------------------------------------------------------------------


@settings(max_examples=300)
@given(rankings, rankings, st.text(max_size=12))
def test_team_draft_merges_without_duplicates_keeping_each_rankers_order(
    first: list[str], second: list[str], seed: str
) -> None:
    merged = team_draft(first, second, seed=seed)
    assert len(merged.tracks) == len(set(merged.tracks)) == len({*first, *second})
    assert len(merged.teams) == len(merged.tracks)
    for team, ranking in ((FIRST, first), (SECOND, second)):
        picks = [t for t, by in zip(merged.tracks, merged.teams, strict=True) if by == team]
        positions = [ranking.index(t) for t in picks]
        assert positions == sorted(positions)  # each ranker's picks keep its order
    for i, (track, team) in enumerate(zip(merged.tracks, merged.teams, strict=True)):
        ranking = first if team == FIRST else second
        best = next(t for t in ranking if t not in merged.tracks[:i])
        assert track == best  # each pick is the ranker's best track not yet in the list
    assert team_draft(first, second, seed=seed) == merged  # reproducible


@settings(max_examples=300)
@given(rankings, rankings, st.text(max_size=12), st.integers(0, 40))
def test_team_draft_stops_at_k_and_keeps_the_teams_balanced(
    first: list[str], second: list[str], seed: str, k: int
) -> None:
    merged = team_draft(first, second, seed=seed, k=k)
    assert len(merged.tracks) == min(k, len({*first, *second}))
    assert merged.tracks == team_draft(first, second, seed=seed).tracks[:k]
    for end in range(len(merged.tracks) + 1):
        prefix = set(merged.tracks[:end])
        both_left = any(t not in prefix for t in first) and any(t not in prefix for t in second)
        if both_left:  # while both rankers can still pick, every round gives each one track
            sizes = [merged.teams[:end].count(FIRST), merged.teams[:end].count(SECOND)]
            assert abs(sizes[0] - sizes[1]) <= 1


@pytest.mark.parametrize("merges", [2000, 5000])
def test_each_ranker_goes_first_half_the_time(merges: int) -> None:
    first, second = [f"a{i}" for i in range(10)], [f"b{i}" for i in range(10)]
    leads = [team_draft(first, second, seed=f"u{merges}-{i}").teams for i in range(merges)]
    # disjoint lists: in each round, the team of its first pick is the coin's choice
    rounds = [teams[r] for teams in leads for r in range(0, 20, 2)]
    for share in (sum(t[0] == FIRST for t in leads) / merges, rounds.count(FIRST) / len(rounds)):
        assert abs(share - 0.5) < 4 * math.sqrt(0.25 / merges)


def test_coins_are_fair_past_one_hash() -> None:
    flips = coins("request-1")
    drawn = [next(flips) for _ in range(4000)]
    assert abs(sum(drawn) / len(drawn) - 0.5) < 4 * math.sqrt(0.25 / len(drawn))
    later = coins("request-1")
    assert [next(later) for _ in range(4000)] == drawn
    other = coins("request-2")
    assert [next(other) for _ in range(256)] != drawn[:256]


# --- credit arithmetic in the stream worker --------------------------------------------


class _Store:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self._key_partition: dict[str, int] = {}


class _Table:
    """A memory-store faust table as the worker's TableEntries reads and writes it."""

    def __init__(self, name: str) -> None:
        self.data = _Store()
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: name)


class _Sender:
    def add(self, *_args: Any) -> None:
        return None


PARTITIONS = 3


def worker_stats(events: Iterable[FeedbackEvent], *, batch: int = 40) -> dict[str, dict[str, float]]:
    """What the stream worker's ``/stats/`` shows after ``events``, counted in batches."""
    arms, users = _Table("arm-stats"), _Table("user-state")
    worker = Aggregator(arms=arms, users=users, speed=None, dead_letters=None)  # type: ignore[arg-type]
    listed = list(events)
    for start in range(0, len(listed), batch):
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for event in listed[start : start + batch]:
            partition = sum(event.user_id.encode()) % PARTITIONS
            message = SimpleNamespace(value=event.to_bytes(), topic="feedback", partition=partition, offset=0)
            by_partition[partition].append(SimpleNamespace(message=message))
        for partition, group in by_partition.items():
            worker._apply(partition, group, _Sender())  # type: ignore[arg-type]
    return arm_totals(dict(arms.data.data))


def listen(
    user: str, version: str, ms: int, *, kind: FeedbackType = FeedbackType.COMPLETE, **extra: Any
) -> FeedbackEvent:
    return FeedbackEvent(
        user_id=user, track_id="t", type=kind, listen_ms=ms, model_version=version, variant=VARIANT, **extra
    )


def hate(user: str, version: str) -> FeedbackEvent:
    return FeedbackEvent(user_id=user, track_id="t", type="hate", model_version=version, variant=VARIANT)


def expected_preference(events: Iterable[FeedbackEvent]) -> Preference:
    """The users' preferences computed from scratch: each user's credited listening per version."""
    listened: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    seen = set()
    for event in events:
        if event.event_id in seen or event.variant != VARIANT or event.listen_ms is None:
            continue
        seen.add(event.event_id)
        listened[event.user_id][event.model_version or ""] += event.listen_ms
    ds = []
    for totals in listened.values():
        t, c = totals.get(TREATMENT, 0), sum(v for k, v in totals.items() if k != TREATMENT)
        if t + c > 0:
            ds.append((t - c) / (t + c))
    return Preference(len(ds), sum(ds), sum(d * d for d in ds))


def random_events(seed: int, users: int) -> list[FeedbackEvent]:
    """Interleaved feedback of every kind, some of it for another experiment, some sent twice."""
    rng = random.Random(seed)
    events = []
    for _ in range(users * 6):
        user = f"u{rng.randrange(users)}"
        version = rng.choice((TREATMENT, PRODUCTION))
        kind = rng.choice(list(FeedbackType))
        ms = (
            rng.choice((0, rng.randrange(1, 300_000)))
            if kind in {FeedbackType.PLAY, FeedbackType.SKIP, FeedbackType.COMPLETE}
            else None
        )
        platform = rng.choice((None, "ios", "web"))
        variant = VARIANT if rng.random() < 0.85 else "other:treatment"
        events.append(
            FeedbackEvent(
                user_id=user, track_id=f"t{rng.randrange(50)}", type=kind, listen_ms=ms,
                model_version=version, variant=variant, platform=platform,
            )
        )  # fmt: skip
    events += rng.sample(events, len(events) // 10)  # a client's retries: counted once
    rng.shuffle(events[len(events) // 2 :])
    return events


def assert_close(found: Preference, expected: Preference) -> None:
    assert found.users == expected.users
    assert found.total == pytest.approx(expected.total, abs=1e-6)
    assert found.total_sq == pytest.approx(expected.total_sq, abs=1e-6)


@pytest.mark.parametrize(("seed", "users"), [(0, 5), (1, 40), (2, 150), (3, 400)])
def test_the_worker_keeps_each_users_preference_once(seed: int, users: int) -> None:
    events = random_events(seed, users)
    stats = worker_stats(events, batch=7 + seed * 30)
    assert_close(preference(stats, EXPERIMENT), expected_preference(events))
    # plays and hates stay credited per version (a hate-rate guardrail can be judged)
    arms = credited_arms(stats, EXPERIMENT)
    for side, version in (("treatment", TREATMENT), ("control", PRODUCTION)):
        mine = [e for e in dict.fromkeys(events) if e.variant == VARIANT and e.model_version == version]
        counters = stats[f"{version}|{VARIANT}"]
        assert counters["hates"] == sum(e.type is FeedbackType.HATE for e in mine)
        assert counters["plays"] == sum(e.listen_ms is not None for e in mine)
        assert arms[side].users == len({e.user_id for e in mine})


def test_a_users_preference_is_replaced_when_their_credits_change() -> None:
    steps = [
        (listen("a", TREATMENT, 100), Preference(1, 1.0, 1.0)),
        (listen("a", PRODUCTION, 100), Preference(1, 0.0, 0.0)),
        (listen("a", PRODUCTION, 200), Preference(1, -0.5, 0.25)),
        (listen("b", PRODUCTION, 50), Preference(2, -1.5, 1.25)),
        (listen("b", TREATMENT, 0, kind=FeedbackType.SKIP), Preference(2, -1.5, 1.25)),
        (hate("b", TREATMENT), Preference(2, -1.5, 1.25)),
        (listen("b", TREATMENT, 150), Preference(2, 0.0, 0.5)),
    ]  # fmt: skip
    events: list[FeedbackEvent] = []
    for event, expected in steps:
        events.append(event)
        assert_close(preference(worker_stats(events, batch=1), EXPERIMENT), expected)
        assert_close(preference(worker_stats(events, batch=100), EXPERIMENT), expected)


@settings(max_examples=200)
@given(
    st.dictionaries(st.sampled_from("abc"), st.integers(0, 10**6), max_size=3),
    st.sampled_from("abc"),
    st.integers(1, 10**6),
)
def test_credit_changes_move_shares_that_sum_to_one(before: dict[str, int], version: str, ms: int) -> None:
    changes = credit_changes(before, version, ms)
    had = sum(before.values()) > 0
    assert sum(c[LISTEN_SHARE] for c in changes.values()) == pytest.approx(0.0 if had else 1.0, abs=1e-9)
    assert sum(c[CREDITED_USERS] for c in changes.values()) == (0 if had else 1)
    after = {**before, version: before.get(version, 0) + ms}
    for name, change in changes.items():
        old = before.get(name, 0) / sum(before.values()) if had else 0.0
        assert change[LISTEN_SHARE_SQ] == pytest.approx((after[name] / sum(after.values())) ** 2 - old**2)
    assert credit_changes(before, version, 0) == {}


# --- the decision --------------------------------------------------------------------------


def users_preferring(n: int, treatment_share: float, *, seed: int, hates: float = 0.0) -> list[FeedbackEvent]:
    """``n`` users who each hear five tracks of each version; the treatment's are completed
    with probability ``treatment_share``, production's with ``1 - treatment_share``."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        for version, p in ((TREATMENT, treatment_share), (PRODUCTION, 1 - treatment_share)):
            for _ in range(5):
                ms = 200_000 if rng.random() < p else rng.randrange(2_000, 30_000)
                events.append(listen(f"u{seed}-{i}", version, ms))
                if version == TREATMENT and rng.random() < hates:
                    events.append(hate(f"u{seed}-{i}", version))
    return events


RULES = InterleavingRules(min_users=50)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_preferred_treatment_advances_to_ab_at_one_percent(seed: int) -> None:
    events = users_preferring(300, 0.65, seed=seed)
    stats = worker_stats(events, batch=500)
    decision = decide_interleaving(EXPERIMENT, stats, rules=RULES)
    assert decision.action is Action.ADVANCE and decision.share == 0.01
    [check] = [c for c in decision.checks if c.metric == PREFERENCE]
    expected = expected_preference(events)
    interval = mean_sequence(
        n=expected.users, total=expected.total, total_sq=expected.total_sq, alpha=0.025, phi=phi_for(0.1)
    )
    assert check.estimate == pytest.approx(expected.total / expected.users) and check.estimate > 0
    assert (check.low, check.high) == (pytest.approx(interval.low), pytest.approx(interval.high))
    assert check.low > 0 and check.treatment_users == check.control_users == 300 and not check.breached


@pytest.mark.parametrize("seed", [0, 1])
def test_a_worse_treatment_is_retired_and_an_equal_one_held(seed: int) -> None:
    worse = decide_interleaving(
        EXPERIMENT, worker_stats(users_preferring(300, 0.35, seed=seed), batch=500), rules=RULES
    )
    assert worse.action is Action.ROLLBACK and worse.share == 0.0 and "prefer production" in worse.reasons[0]
    assert worse.checks[-1].high < 0 and worse.checks[-1].breached
    equal = decide_interleaving(
        EXPERIMENT, worker_stats(users_preferring(300, 0.5, seed=seed), batch=500), rules=RULES
    )
    assert equal.action is Action.HOLD and equal.checks[-1].low < 0 < equal.checks[-1].high


def test_too_few_users_or_paused_hold() -> None:
    stats = worker_stats(users_preferring(40, 0.9, seed=3), batch=500)
    few = decide_interleaving(EXPERIMENT, stats, rules=RULES)
    assert few.action is Action.HOLD and "40 users" in few.reasons[0] and few.share == 0.01
    paused = decide_interleaving(EXPERIMENT.model_copy(update={"paused": True}), stats, rules=RULES)
    assert paused.action is Action.HOLD and paused.reasons == ["paused"]
    assert decide_interleaving(EXPERIMENT, {}, rules=RULES).action is Action.HOLD


def test_many_more_hates_on_the_treatments_tracks_roll_back_at_once() -> None:
    stats = worker_stats(users_preferring(30, 0.7, seed=4, hates=0.9), batch=500)
    decision = decide_interleaving(EXPERIMENT, stats, rules=RULES)  # fewer users than min_users
    assert decision.action is Action.ROLLBACK and "hate rate" in decision.reasons[0]
    [hates] = [c for c in decision.checks if c.metric == "hate_rate"]
    assert hates.breached and hates.low > RULES.max_hate_rate_increase


@pytest.fixture
def registry(trained: tuple[FileRegistry, TrainResult], tmp_path: Path) -> FileRegistry:
    from tests.unit.test_registry import clone_version

    shutil.copytree(trained[0].root, tmp_path / "models")
    copy = FileRegistry(tmp_path / "models")
    assert clone_version(copy, copy, ndcg=0.5) == TREATMENT
    return copy


def test_an_advance_switches_the_experiment_to_ab_at_one_percent(registry: FileRegistry) -> None:
    registry.set_experiment(EXPERIMENT.model_copy(update={"share": 0.05}))
    [running] = registry.rollout().experiments
    stats = worker_stats(users_preferring(200, 0.7, seed=5), batch=500)
    decision = decide_interleaving(running, stats, rules=RULES)
    apply_decision(registry, running, decision, credited_arms(stats, running))
    [moved] = registry.rollout().experiments
    assert (moved.mode, moved.share, moved.treatment) == (ExperimentMode.AB, 0.01, TREATMENT)
    assert moved.step_started is not None and running.step_started is not None
    assert moved.step_started > running.step_started
    worse = decide_interleaving(
        running, worker_stats(users_preferring(200, 0.3, seed=6), batch=500), rules=RULES
    )
    apply_decision(registry, running, worse, {})
    assert registry.rollout().experiments == []


def test_the_report_and_the_live_look_show_an_interleaving_experiment(registry: FileRegistry) -> None:
    registry.set_experiment(EXPERIMENT.model_copy(update={"share": 0.05}))
    [running] = registry.rollout().experiments
    stats = worker_stats(users_preferring(200, 0.7, seed=7), batch=500)
    live = live_look(stats, running, datetime.now(UTC))
    assert live.arms["treatment"].users == 200 and PREFERENCE in [c["metric"] for c in live.checks]
    decision = decide_interleaving(running, stats, rules=RULES)
    apply_decision(registry, running, decision, credited_arms(stats, running))
    past = history(registry.records().records, running.name)
    assert past.modes == ["interleave", "ab"] and past.interleaved
    page = render_report(past)
    assert 'data-mode="interleave → ab"' in page and "preference" in page
