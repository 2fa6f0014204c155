"""An experiment's history, read back from the registry's records.

Every rollout controller decision is recorded with its numbers (both arms, the listening
difference, the sample-ratio check, the guardrails), and every change of the plan with
the share it set (:mod:`recsys.registry.experiment_log`): together they are the experiment's time
series, and a report can be written long after the stream worker that counted the events
has moved on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from functools import cache
from typing import Any, get_type_hints

from recsys.experiments.analysis import ArmMetrics, Difference
from recsys.registry.experiment_log import REASONS_JOIN, DecisionRecord, Interval, PlanChange, Record, Scalar

ARMS = ("treatment", "control", "holdout")


@dataclass(frozen=True)
class Look:
    """One decision of the controller, with the numbers it saw."""

    at: datetime
    action: str
    share: float
    """The share after the decision."""
    reasons: str
    arms: dict[str, ArmMetrics]
    listening: Difference | None = None
    srm_p_value: float | None = None
    health: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per arm, the serving guardrail numbers (``p99_ms``, ``error_rate``) when recorded."""
    sequential: Difference | None = None
    """The always-valid interval of the listening difference (holds at every look)."""
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per slice (``platform=ios``), users per arm and the listening difference with its CI."""
    checks: list[dict[str, Scalar]] = field(default_factory=list)
    """Every guardrail judged at this look (metric, estimate, interval, margin, breached, ...)."""

    def worse_slices(self) -> list[str]:
        """Slices where listening per user is lower in treatment with 95% confidence."""
        return [name for name, row in self.slices.items() if row.get("high", 0.0) < 0]


@dataclass
class History:
    """Everything the records say about one experiment."""

    name: str
    treatment: str = ""
    looks: list[Look] = field(default_factory=list)
    shares: list[tuple[datetime, float]] = field(default_factory=list)
    """Each change of the treatment's share (0 when stopped)."""
    outcome: str = "running"
    """``running``, ``promoted``, ``rolled back`` or ``stopped``."""
    modes: list[str] = field(default_factory=list)
    """The modes it ran in, in order (``interleave`` then ``ab`` for one that went from
    interleaving on to the A/B ladder)."""

    @property
    def interleaved(self) -> bool:
        return "interleave" in self.modes

    @property
    def started(self) -> datetime | None:
        times = [t for t, _ in self.shares] + [look.at for look in self.looks]
        return min(times) if times else None

    @property
    def last(self) -> Look | None:
        return self.looks[-1] if self.looks else None


def experiment_names(records: Iterable[Record]) -> list[str]:
    """Every experiment the records mention, in order of first appearance."""
    names: dict[str, None] = {}
    for record in records:
        if isinstance(record, PlanChange | DecisionRecord):
            names.setdefault(record.experiment, None)
    return list(names)


def history(records: Iterable[Record], name: str) -> History:
    """The history of experiment ``name`` from the registry's records (``FileRegistry.records()``).

    The records may hold several runs of one name (an experiment restarted after a rollback);
    the history is that of the latest run.
    """
    out = History(name)
    for record in records:
        if isinstance(record, PlanChange) and record.experiment == name:
            if record.stopped:
                out.shares.append((record.at, 0.0))
                out.outcome = "stopped" if out.outcome == "running" else out.outcome
                continue
            if out.outcome != "running":  # a new run of the same name
                out = History(name)
            out.treatment = record.treatment or out.treatment
            out.shares.append((record.at, record.share))
            mode = record.mode or "ab"
            if not out.modes or out.modes[-1] != mode:
                out.modes.append(mode)
        elif isinstance(record, DecisionRecord) and record.experiment == name:
            out.treatment = record.treatment
            out.looks.append(look_from(record))
            if record.action == "complete" and out.shares and out.shares[-1][1] == 0.0:
                out.shares.pop()  # stopped because promoted: everyone has the treatment now
            out.outcome = {"complete": "promoted", "rollback": "rolled back"}.get(record.action, out.outcome)
    return out


def look_from(record: DecisionRecord) -> Look:
    """A :class:`Look` from a recorded decision."""
    return Look(
        at=record.at,
        action=record.action,
        share=record.share,
        reasons=REASONS_JOIN.join(record.reasons),
        arms={arm: arm_metrics(values) for arm, values in record.arms.items()},
        listening=_difference(record.listening),
        srm_p_value=record.srm_p_value,
        health={arm: {"p99_ms": h.p99_ms, "error_rate": h.error_rate} for arm, h in record.health.items()},
        sequential=_difference(record.sequential),
        slices={name: dict(row) for name, row in record.slices.items()},
        checks=[dict(check) for check in record.checks],
    )


def arm_metrics(values: Mapping[str, float]) -> ArmMetrics:
    """An arm's metrics from a recorded dict: unknown keys are ignored, missing ones take the
    field's default (or 0), so records written before or after a change of
    :class:`~recsys.experiments.analysis.ArmMetrics` still read."""
    known: dict[str, Any] = {}
    for name, kind, default in _arm_fields():
        value = values.get(name, default)
        try:
            known[name] = int(value) if kind is int else float(value) if kind is float else value
        except (TypeError, ValueError):
            known[name] = default
    return ArmMetrics(**known)


@cache
def _arm_fields() -> tuple[tuple[str, Any, Any], ...]:
    hints = get_type_hints(ArmMetrics)
    out = []
    for f in fields(ArmMetrics):
        if f.default is not MISSING:
            default: Any = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = hints[f.name]() if hints[f.name] in (int, float) else None
        out.append((f.name, hints[f.name], default))
    return tuple(out)


def _difference(interval: Interval | None) -> Difference | None:
    if interval is None:
        return None
    values = interval.model_dump()
    return Difference(**{f.name: values.get(f.name, 0.0) for f in fields(Difference)})
