"""Serving guardrail numbers from Prometheus pages: p99 per version, server errors."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from recsys.experiments.controller import Action, Guardrails, decide
from recsys.experiments.serving_health import ServingHealth, quantile, serving_health
from recsys.registry.plan import Experiment
from tests.conftest import arm_numbers

ROUTE = 'route="/v1/recommendations",method="POST"'


def page(version: str, status: str, buckets: dict[str, int]) -> str:
    tag = f'model_version="{version}"'
    lines = [
        f'recsys_request_seconds_bucket{{{ROUTE},status="{status}",{tag},le="{le}"}} {n}.0'
        for le, n in buckets.items()
    ]
    total = buckets["+Inf"]
    lines.append(
        f'recsys_request_seconds_count{{{ROUTE},status="{status}",model_version="{version}"}} {total}.0'
    )
    lines.append(
        f'recsys_request_seconds_bucket{{route="/healthz",method="GET",status="200",{tag},le="+Inf"}} 999.0'
    )
    return "# HELP recsys_request_seconds Request latency.\n" + "\n".join(lines)


def test_the_quantile_is_interpolated_within_its_bucket() -> None:
    cumulative = {0.005: 50.0, 0.01: 90.0, 0.025: 100.0, math.inf: 100.0}
    assert quantile(0.5, cumulative) == pytest.approx(0.005)
    assert quantile(0.99, cumulative) == pytest.approx(0.01 + 0.015 * 9 / 10)
    assert quantile(0.99, {0.1: 0.0, math.inf: 10.0}) == 0.1  # beyond the last bound: that bound
    assert quantile(0.99, {math.inf: 0.0}) == 0.0


def test_versions_are_judged_over_every_replica_and_only_on_the_recommendation_route() -> None:
    fast = {"0.005": 98, "0.01": 100, "0.25": 100, "+Inf": 100}
    slow = {"0.005": 0, "0.01": 0, "0.25": 90, "+Inf": 100}
    failed = {"0.005": 5, "0.01": 5, "0.25": 5, "+Inf": 5}
    health = serving_health(
        [page("2.1", "200", fast), page("2.2", "200", slow) + "\n" + page("2.2", "500", failed)]
    )
    assert (health["2.1"].requests, health["2.1"].errors) == (100, 0)
    assert health["2.1"].p99_ms == pytest.approx(7.5)
    assert health["2.1"].slower_than(5.0) == 2 and health["2.1"].slower_than(10.0) == 0
    assert health["2.2"].requests == 105 and health["2.2"].errors == 5
    assert health["2.2"].p99_ms == 250.0  # the last 1% are over the last finite bound
    assert serving_health([page("2.1", "200", fast), page("2.1", "200", fast)])["2.1"].requests == 200


def test_a_slow_or_failing_treatment_is_rolled_back_on_evidence() -> None:
    experiment = Experiment(name="v2.2", treatment="2.2", share=0.01)
    arms = {"treatment": arm_numbers(300, 600.0), "control": arm_numbers(300, 600.0)}

    def decision(requests: int, errors: int, slow: int) -> tuple[Action, list[str]]:
        ok = {"0.005": 0, "0.1": requests - errors - slow, "0.25": requests - errors - slow}
        ok["+Inf"] = requests - errors
        failed = {"0.005": errors, "0.1": errors, "0.25": errors, "+Inf": errors}
        (health,) = serving_health([page("2.2", "200", ok) + "\n" + page("2.2", "500", failed)]).values()
        d = decide(
            experiment=experiment,
            **arms,
            step_age=timedelta(hours=2),
            serving=health,
            guardrails=Guardrails(),
        )
        return d.action, d.reasons

    assert decision(1000, 0, 0)[0] is Action.ADVANCE
    action, reasons = decision(1000, 0, 100)
    assert action is Action.ROLLBACK and reasons[0].startswith("answers slower than the p99 limit 10.00%")
    action, reasons = decision(1000, 30, 0)
    assert action is Action.ROLLBACK and reasons[0].startswith("error rate 3.00% over 1000 requests")
    # a handful of requests is no evidence: 2 errors of 20 might be a 1% rate's bad luck
    assert decision(20, 2, 0)[0] is Action.ADVANCE
    assert decision(1000, 12, 5)[0] is Action.ADVANCE  # 1.2% errors is not shown above 1%


def test_slow_answers_are_counted_from_the_first_bucket_at_or_above_the_limit() -> None:
    health = ServingHealth(100, 0, 300.0, ((100.0, 40), (250.0, 10), (500.0, 2)))
    assert health.slower_than(250.0) == 10 and health.slower_than(200.0) == 10
    assert health.slower_than(600.0) == 0 and health.slower_than(50.0) == 40
