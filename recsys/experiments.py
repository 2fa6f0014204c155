"""An experiment's arms read from the stream worker's counters, and decisions applied to the registry."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from recsys.aggregates import SLICE_MARK, total
from recsys.analysis import ArmMetrics, compare, welch
from recsys.controller import Action, Decision
from recsys.errors import BackboneUnavailable, InvalidRequest
from recsys.health import ServingHealth, serving_health
from recsys.registry import FileRegistry
from recsys.report.history import Look
from recsys.rollout import HOLDOUT, Experiment

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
    """The experiment's numbers now, as a :class:`Look` that no decision has acted on."""
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
) -> None:
    """Act on ``decision`` and record it with its numbers in the audit log.

    ``serving`` holds, per arm, the latency and errors of the version that served it;
    ``slices`` the per-slice differences (:func:`slice_differences`).
    """
    numbers = {"control_version": registry.production(), **_numbers(decision, arms)}
    if slices:
        numbers["slices"] = {name: dict(row) for name, row in slices.items()}
    for arm, health in (serving or {}).items():
        numbers |= {
            f"{arm}_requests": health.requests,
            f"{arm}_p99_ms": health.p99_ms,
            f"{arm}_error_rate": health.error_rate,
        }
    if decision.action is Action.ADVANCE:
        registry.set_experiment(experiment.model_copy(update={"share": decision.share}))
    elif decision.action is Action.ROLLBACK:
        registry.stop_experiment(experiment.name)
    elif decision.action is Action.COMPLETE:
        registry.promote(experiment.treatment, force=True)  # the experiment is the gate
        registry.stop_experiment(experiment.name)
    registry.record_decision(experiment.name, experiment.treatment, decision.action.value, numbers)


def _numbers(decision: Decision, arms: Mapping[str, ArmMetrics]) -> dict[str, Any]:
    numbers: dict[str, Any] = {"share": decision.share, "reasons": "; ".join(decision.reasons)}
    if decision.listening is not None:
        numbers |= {f"listening_{k}": v for k, v in asdict(decision.listening).items()}
    if decision.sequential is not None:
        numbers |= {f"sequential_{k}": v for k, v in asdict(decision.sequential).items()}
    if decision.srm_p_value is not None:
        numbers["srm_p_value"] = decision.srm_p_value
    for arm, metrics in arms.items():
        numbers |= {f"{arm}_{k}": v for k, v in asdict(metrics).items()}
    return numbers
