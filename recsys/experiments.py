"""An experiment's arms read from the stream worker's counters, and decisions applied to the registry."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from recsys.aggregates import total
from recsys.analysis import ArmMetrics, sample_ratio_mismatch, welch
from recsys.controller import Action, Decision
from recsys.errors import BackboneUnavailable, InvalidRequest
from recsys.registry import FileRegistry
from recsys.report.history import Look
from recsys.rollout import Experiment

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
    """``treatment`` and ``control`` of ``experiment``, summed over model versions."""
    out = {}
    for arm in ("treatment", "control"):
        variant = f"{experiment}:{arm}"
        parts = [counters for key, counters in stats.items() if key.rsplit("|", 1)[-1] == variant]
        out[arm] = ArmMetrics.from_counters(total(parts))
    return out


def live_look(stats: Mapping[str, Mapping[str, float]], experiment: Experiment, now: datetime) -> Look:
    """The experiment's numbers now, as a :class:`Look` that no decision has acted on."""
    arms = arm_metrics(stats, experiment.name)
    treatment, control = arms["treatment"], arms["control"]
    listening = welch(treatment, control) if min(treatment.users, control.users) >= 2 else None
    srm = (
        sample_ratio_mismatch({"t": treatment.users, "c": control.users}, {"t": 1.0, "c": 1.0})
        if experiment.share < 1.0
        else None
    )
    return Look(now, "live", experiment.share, "", arms, listening, srm)


def apply_decision(
    registry: FileRegistry, experiment: Experiment, decision: Decision, arms: Mapping[str, ArmMetrics]
) -> None:
    """Act on ``decision`` and record it with its numbers in the audit log."""
    numbers = {"control_version": registry.production(), **_numbers(decision, arms)}
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
    if decision.srm_p_value is not None:
        numbers["srm_p_value"] = decision.srm_p_value
    for arm, metrics in arms.items():
        numbers |= {f"{arm}_{k}": v for k, v in asdict(metrics).items()}
    return numbers
