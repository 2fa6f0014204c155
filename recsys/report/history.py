"""An experiment's history, read back from the registry's audit log.

Every rollout controller decision is logged with its numbers (both arms, the listening
difference, the sample-ratio check, the guardrails), and every change of the plan with
the share it set: together they are the experiment's time series, and a report can be
written long after the stream worker that counted the events has moved on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from recsys.analysis import ArmMetrics, Difference

ARMS = ("treatment", "control", "holdout")
_ROLLOUT = re.compile(r"^rollout (?P<name>[A-Za-z0-9_.-]+): (?P<what>.+)$")
_SHARE = re.compile(r"^share (?P<share>[0-9.eE+-]+)$")


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

    def worse_slices(self) -> list[str]:
        """Slices where listening per user is lower in treatment with 95% confidence."""
        return [name for name, row in self.slices.items() if row.get("high", 0.0) < 0]


@dataclass
class History:
    """Everything the audit log says about one experiment."""

    name: str
    treatment: str = ""
    looks: list[Look] = field(default_factory=list)
    shares: list[tuple[datetime, float]] = field(default_factory=list)
    """Each change of the treatment's share (0 when stopped)."""
    outcome: str = "running"
    """``running``, ``promoted``, ``rolled back`` or ``stopped``."""

    @property
    def started(self) -> datetime | None:
        times = [t for t, _ in self.shares] + [look.at for look in self.looks]
        return min(times) if times else None

    @property
    def last(self) -> Look | None:
        return self.looks[-1] if self.looks else None


def experiment_names(log: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every experiment the log mentions, in order of first appearance."""
    names: dict[str, None] = {}
    for entry in log:
        match = _ROLLOUT.match(str(entry.get("action", "")))
        if match:
            names.setdefault(match["name"], None)
    return list(names)


def history(log: Sequence[Mapping[str, Any]], name: str) -> History:
    """The history of experiment ``name`` from the audit log (``FileRegistry.state()["log"]``).

    The log may hold several runs of one name (an experiment restarted after a rollback);
    the history is that of the latest run.
    """
    out = History(name)
    for entry in log:
        match = _ROLLOUT.match(str(entry.get("action", "")))
        if not match or match["name"] != name:
            continue
        at, what = datetime.fromisoformat(entry["at"]), match["what"]
        share = _SHARE.match(what)
        if share:
            if out.outcome != "running":  # a new run of the same name
                out = History(name)
            out.treatment = str(entry.get("version", out.treatment))
            out.shares.append((at, float(share["share"])))
        elif what == "stopped":
            out.shares.append((at, 0.0))
            out.outcome = "stopped" if out.outcome == "running" else out.outcome
        elif "detail" in entry:
            out.treatment = str(entry.get("version", out.treatment))
            out.looks.append(look_from(at, what, entry["detail"]))
            if what == "complete" and out.shares and out.shares[-1][1] == 0.0:
                out.shares.pop()  # stopped because promoted: everyone has the treatment now
            out.outcome = {"complete": "promoted", "rollback": "rolled back"}.get(what, out.outcome)
    return out


def look_from(at: datetime, action: str, detail: Mapping[str, Any]) -> Look:
    """A :class:`Look` from a decision's logged numbers (see ``recsys.experiments``)."""
    arms = {
        arm: ArmMetrics(**{f.name: detail[f"{arm}_{f.name}"] for f in fields(ArmMetrics)})
        for arm in ARMS
        if f"{arm}_users" in detail
    }
    listening, sequential = (
        Difference(*(float(detail[f"{name}_{k}"]) for k in ("estimate", "low", "high", "p_value")))
        if f"{name}_estimate" in detail
        else None
        for name in ("listening", "sequential")
    )
    health = {
        arm: {k: float(detail[f"{arm}_{k}"]) for k in ("p99_ms", "error_rate") if f"{arm}_{k}" in detail}
        for arm in ARMS
        if any(f"{arm}_{k}" in detail for k in ("p99_ms", "error_rate"))
    }
    return Look(
        at=at,
        action=action,
        share=float(detail.get("share", 0.0)),
        reasons=str(detail.get("reasons", "")),
        arms=arms,
        listening=listening,
        srm_p_value=detail.get("srm_p_value"),
        health=health,
        sequential=sequential,
        slices=dict(detail.get("slices", {})),
    )
