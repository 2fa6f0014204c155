"""An experiment's arms read from the stream worker's counters, and decisions applied to the registry."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from recsys.errors import BackboneUnavailable, InvalidRequest
from recsys.experiments.aggregates import SLICE_MARK, total
from recsys.experiments.analysis import ArmMetrics, Difference, compare, welch
from recsys.experiments.controller import Action, Decision
from recsys.experiments.interleaving import credited_arms, decide_interleaving
from recsys.experiments.report.history import Look
from recsys.experiments.serving_health import ServingHealth, serving_health
from recsys.registry.experiment_log import ArmHealth, DecisionRecord, Interval, Scalar
from recsys.registry.plan import HOLDOUT, Experiment, ExperimentMode
from recsys.registry.store import FileRegistry

STATS_TIMEOUT_S = 10.0


def read_stats(source: str) -> dict[str, dict[str, float]]:
    """Per-arm counters (``version|variant`` -> counters) from a URL or a JSON file."""
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=STATS_TIMEOUT_S) as response:
                data = json.loads(response.read())
        else:
            data = json.loads(Path(source).read_text())
    except OSError as exc:
        raise BackboneUnavailable(f"cannot read arm counters from {source}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{source} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest(f"{source}: expected an object of arms")
    return data


def arm_metrics(stats: Mapping[str, Mapping[str, float]], experiment: str) -> dict[str, ArmMetrics]:
    """``treatment`` and ``control`` of ``experiment``, summed over model versions, and the
    plan's ``holdout`` (popular tracks, no personalisation) when it has users."""

    def variant(name: str) -> list[Mapping[str, float]]:
        return [counters for key, counters in stats.items() if key.rsplit("|", 1)[-1] == name]

    out = {
        arm: ArmMetrics.from_counters(total(variant(f"{experiment}:{arm}")))
        for arm in ("treatment", "control")
    }
    held_out = variant(HOLDOUT)
    if held_out:
        out[HOLDOUT] = ArmMetrics.from_counters(total(held_out))
    return out


def slice_differences(
    stats: Mapping[str, Mapping[str, float]], experiment: str
) -> dict[str, dict[str, float]]:
    """Per slice (``platform=ios``, ``country=DE``), both arms' users and the difference in
    listening per user with its 95% CI (``estimate``, ``low``, ``high``, ``p_value``; absent
    with fewer than two users in an arm). Not corrected for the number of slices: a slice
    worse with confidence is a lead to check, not a verdict."""
    parts: dict[str, dict[str, list[Mapping[str, float]]]] = {}
    for key, counters in stats.items():
        variant, mark, name = key.rsplit("|", 1)[-1].partition(SLICE_MARK)
        arm = variant.removeprefix(f"{experiment}:")
        if mark and arm in ("treatment", "control") and variant != arm:
            parts.setdefault(name, {}).setdefault(arm, []).append(counters)
    out = {}
    for name, arms in sorted(parts.items()):
        treatment = ArmMetrics.from_counters(total(arms.get("treatment", [])))
        control = ArmMetrics.from_counters(total(arms.get("control", [])))
        row: dict[str, float] = {"treatment_users": treatment.users, "control_users": control.users}
        if min(treatment.users, control.users) >= 2:
            row |= asdict(welch(treatment, control))
        out[name] = row
    return out


def live_look(stats: Mapping[str, Mapping[str, float]], experiment: Experiment, now: datetime) -> Look:
    """The experiment's numbers now, as a :class:`Look` that no decision has acted on.

    For an interleaving experiment the arms are what each version's tracks earned in the
    merged lists, and the preference check is the one the controller would make now.
    """
    if experiment.mode == ExperimentMode.INTERLEAVE:
        found = decide_interleaving(experiment, stats)
        checks = [asdict(c) for c in found.checks]
        return Look(now, "live", experiment.share, "", credited_arms(stats, experiment), checks=checks)
    arms = arm_metrics(stats, experiment.name)
    c = compare(arms["treatment"], arms["control"], share=experiment.share)
    slices = slice_differences(stats, experiment.name)
    return Look(
        now,
        "live",
        experiment.share,
        "",
        arms,
        c.listening,
        c.srm_p_value,
        sequential=c.sequential,
        slices=slices,
    )


def read_serving_health(urls: Sequence[str]) -> dict[str, ServingHealth]:
    """Per model version, latency and errors summed over the replicas' ``/metrics`` pages."""
    pages = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=STATS_TIMEOUT_S) as response:
                pages.append(response.read().decode())
        except OSError as exc:
            raise BackboneUnavailable(f"cannot read serving metrics from {url}: {exc}") from exc
    return serving_health(pages)


def apply_decision(
    registry: FileRegistry,
    experiment: Experiment,
    decision: Decision,
    arms: Mapping[str, ArmMetrics],
    serving: Mapping[str, ServingHealth] | None = None,
    slices: Mapping[str, Mapping[str, float]] | None = None,
) -> DecisionRecord:
    """Act on ``decision`` and record it with its numbers in the registry's records.

    ``serving`` holds, per arm, the latency and errors of the version that served it;
    ``slices`` the per-slice differences (:func:`slice_differences`). Returns the decision
    as recorded.
    """
    record = decision_record(
        experiment=experiment,
        decision=decision,
        arms=arms,
        control_version=registry.production(),
        serving=serving,
        slices=slices,
    )
    if decision.action is Action.ADVANCE:  # an interleaving experiment goes on as an A/B test
        registry.set_experiment(
            experiment.model_copy(update={"share": decision.share, "mode": ExperimentMode.AB})
        )
    elif decision.action is Action.ROLLBACK:
        registry.stop_experiment(experiment.name)
    elif decision.action is Action.COMPLETE:
        registry.promote(experiment.treatment, force=True)  # the experiment is the gate
        registry.stop_experiment(experiment.name)
    return registry.record_decision(record)


def decision_record(
    *,
    experiment: Experiment,
    decision: Decision,
    arms: Mapping[str, ArmMetrics],
    control_version: str | None,
    serving: Mapping[str, ServingHealth] | None = None,
    slices: Mapping[str, Mapping[str, float]] | None = None,
) -> DecisionRecord:
    """The record of ``decision`` on ``experiment``, with every number it was made on.

    Arms and guardrail checks are stored field by field (``dataclasses.asdict``), so fields
    added to :class:`~recsys.experiments.analysis.ArmMetrics` or the checks are recorded as they come.
    """
    return DecisionRecord(
        experiment=experiment.name,
        treatment=experiment.treatment,
        control_version=control_version,
        action=decision.action.value,
        share=decision.share,
        reasons=list(decision.reasons),
        arms={arm: _numbers(asdict(metrics)) for arm, metrics in arms.items()},
        listening=_interval(decision.listening),
        sequential=_interval(decision.sequential),
        srm_p_value=decision.srm_p_value,
        checks=[_scalars(asdict(check)) for check in decision.checks],
        health={
            arm: ArmHealth(requests=h.requests, p99_ms=h.p99_ms, error_rate=h.error_rate)
            for arm, h in (serving or {}).items()
        },
        slices={name: _numbers(row) for name, row in (slices or {}).items()},
    )


def _interval(difference: Difference | None) -> Interval | None:
    return None if difference is None else Interval.model_validate(asdict(difference))


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric fields (``None`` and anything else left out: a reader takes the default)."""
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _scalars(values: Mapping[str, Any]) -> dict[str, Scalar]:
    return {k: v for k, v in values.items() if v is None or isinstance(v, bool | int | float | str)}
