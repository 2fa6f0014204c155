"""The promotion gate: may a candidate become production? One pure function, used by CLI and trainer."""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys.evaluation.metrics import PRIMARY_METRIC, better
from recsys.registry.manifest import Manifest


@dataclass
class GateDecision:
    """The verdict, and every reason that led to it."""

    allowed: bool
    reasons: list[str] = field(default_factory=list)


def promotion_gate(
    candidate: Manifest, production: Manifest | None, *, metric: str = PRIMARY_METRIC, tolerance: float = 0.0
) -> GateDecision:
    """Refuse a candidate that does not beat production and every baseline on ``metric``.

    A tie with production is refused: promoting it would change nothing users can tell,
    and the registry's history would no longer say which version earned its place.

    Parameters
    ----------
    candidate : Manifest
        The version to promote.
    production : Manifest or None
        The current production version, if any.
    metric : str
        The primary offline metric.
    tolerance : float
        Relative shortfall against production still allowed (e.g. 0.02: within 2%), for a
        version that goes to an online experiment, where listening time decides.
    """
    value = candidate.primary_metric(metric)
    if value is None:
        return GateDecision(False, [f"{candidate.version} has no offline {metric}; evaluate it first"])
    reasons: list[str] = []
    allowed = True
    baselines = {
        k: v.get(metric) for k, v in candidate.metrics.get("methods", {}).items() if k != candidate.algorithm
    }
    for name, base in baselines.items():
        if base is not None and not better(metric, value, float(base)):
            allowed = False
            reasons.append(f"{metric} {value:.4f} does not beat baseline {name} ({float(base):.4f})")
    if production is not None and production.version != candidate.version:
        prod_value = production.primary_metric(metric)
        shortfall = abs(prod_value - value) if prod_value is not None else 0.0
        within_tolerance = tolerance > 0 and shortfall <= tolerance * abs(prod_value or 0.0)
        if prod_value is not None and not better(metric, value, prod_value) and not within_tolerance:
            allowed = False
            verdict = "ties" if value == prod_value else "is worse than"
            reasons.append(
                f"{metric} {value:.4f} {verdict} production {production.version} ({prod_value:.4f})"
            )
        if production.lineage.get("content_sha256") != candidate.lineage.get("content_sha256"):
            reasons.append("note: evaluated on different data than production; the comparison is indicative")
    if allowed:
        reasons.insert(
            0,
            f"{metric} {value:.4f} beats every baseline" + (" and production" if production else ""),
        )
    return GateDecision(allowed, reasons)
