"""The promotion gate: a candidate must beat production and every baseline; a tie is refused."""

from __future__ import annotations

import pytest

from recsys.registry.gate import promotion_gate
from recsys.registry.manifest import Manifest


def manifest(version: str, ndcg: float, *, baseline: float = 0.1) -> Manifest:
    return Manifest.model_validate(
        {
            "version": version,
            "params": {},
            "device": "cpu",
            "lineage": {"content_sha256": "same"},
            "metrics": {"methods": {"als": {"ndcg@500": ndcg}, "item_knn": {"ndcg@500": baseline}}},
            "shapes": {"items": 1, "rows": 1, "factors": 1},
        }
    )


@pytest.mark.parametrize(
    ("candidate", "production", "allowed", "reason"),
    [
        (0.31, 0.30, True, "beats every baseline and production"),
        (0.30, 0.30, False, "ties production 2.1"),
        (0.29, 0.30, False, "is worse than production 2.1"),
        (0.05, None, False, "does not beat baseline item_knn"),
    ],
)
def test_the_gate_lets_only_a_strictly_better_candidate_through(
    candidate: float, production: float | None, allowed: bool, reason: str
) -> None:
    current = manifest("2.1", production) if production is not None else None
    decision = promotion_gate(manifest("2.2", candidate), current)
    assert decision.allowed is allowed and any(reason in r for r in decision.reasons)


def test_a_tolerance_lets_a_close_candidate_go_to_an_online_experiment() -> None:
    production = manifest("2.1", 0.30)
    assert promotion_gate(manifest("2.2", 0.30), production, tolerance=0.02).allowed
    assert promotion_gate(manifest("2.2", 0.295), production, tolerance=0.02).allowed
    assert not promotion_gate(manifest("2.2", 0.29), production, tolerance=0.02).allowed
