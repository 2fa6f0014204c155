"""When to retrain: new feedback past the registry's latest feedback cut.

A version trained with the feedback log records the log's end offsets it read
(``lineage.feedback.end_offsets``). The newest such cut in the registry is what the
registry has already learned from, whether that version is production or still in its
rollout; feedback past it is new. The retrain trigger (stream worker) and the trainer
both use these functions, so they agree on what a request means.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from recsys.registry.plan import RolloutPlan
from recsys.registry.store import FileRegistry


@dataclass(frozen=True)
class Thresholds:
    """Retrain once ``min_events`` new events arrived, or once the oldest new event is
    ``max_age_s`` old (with at least one)."""

    min_events: int = 10_000
    max_age_s: float = 86_400.0


def feedback_cut(registry: FileRegistry) -> dict[int, int]:
    """Partition -> offset of ``feedback`` the newest feedback-trained version read up to
    (empty: no version learned from feedback yet, so the whole log is new)."""
    for version in reversed(registry.versions()):
        offsets = registry.manifest(str(version)).lineage.get("feedback", {}).get("end_offsets")
        if offsets:
            return {int(p): int(o) for p, o in offsets.items()}
    return {}


def request_id(cut: Mapping[int, int]) -> str:
    """The id of the retraining past ``cut`` (the same cut always gives the same id)."""
    text = json.dumps({str(p): o for p, o in sorted(cut.items())})
    return "retrain-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def new_events(cut: Mapping[int, int], ends: Mapping[int, int]) -> int:
    """Events in the log past ``cut``, given each partition's end offset."""
    return sum(max(0, end - cut.get(p, 0)) for p, end in ends.items())


def reason_to_retrain(new: int, oldest_age_s: float | None, thresholds: Thresholds) -> str | None:
    """Why to retrain now, or ``None`` to wait."""
    if new >= thresholds.min_events:
        return f"{new} new feedback events (threshold {thresholds.min_events})"
    if new > 0 and oldest_age_s is not None and oldest_age_s >= thresholds.max_age_s:
        return (
            f"oldest of {new} new feedback events is {oldest_age_s:.0f}s old"
            f" (threshold {thresholds.max_age_s:.0f}s)"
        )
    return None


def retrained_under_test(plan: RolloutPlan) -> str | None:
    """The experiment of a retrained version still running (named ``v<version>`` by the
    trainer), if any: one retrained version is tested at a time, so until it ends neither
    a new request nor a new experiment is useful."""
    return next((e.name for e in plan.experiments if e.name == f"v{e.treatment}"), None)


def version_for_request(registry: FileRegistry, request: str) -> str | None:
    """The version already trained for retrain request ``request``, if any."""
    for version in reversed(registry.versions()):
        if registry.manifest(str(version)).lineage.get("retrain_request") == request:
            return str(version)
    return None
