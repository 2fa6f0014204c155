"""The trust of each listener account of a feedback event log, and what it discounted."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from recsys.data.interaction_table import Interactions
from recsys.trust.policy import DAY_MS, TrustParams, age_trust

log = logging.getLogger(__name__)
POLICY = "account_age"


@dataclass
class AccountTrust:
    """Per listener (row) of an event log: how much its feedback counts in training.

    Attributes
    ----------
    trust : ndarray of float32
        In [0, 1], aligned with the log's rows.
    params : TrustParams
    cut_ms : int or None
        The cut ages are measured at (the newest event time); ``None`` when not applied.
    clock : str or None
        The log's column the ages come from (``received_ms`` or ``ts``).
    weight, discounted_weight : float
        Sum of the log's absolute interaction weights, and the part trust took off it.
    reason : str
        Why trust was not applied, when it was not.
    """

    trust: np.ndarray
    params: TrustParams
    cut_ms: int | None = None
    clock: str | None = None
    weight: float = 0.0
    discounted_weight: float = 0.0
    reason: str = ""

    @property
    def discounts(self) -> bool:
        """Whether any account counts less than fully."""
        return bool((self.trust < 1).any())

    def row_weights(self, base_rows: int) -> np.ndarray:
        """Weights of a table holding ``base_rows`` rows (playlists, counted fully) then the log's rows."""
        return np.concatenate([np.ones(base_rows, np.float32), self.trust])

    def summary(self) -> dict[str, Any]:
        """What the manifest's lineage records (``lineage.trust``)."""
        out: dict[str, Any] = {
            "policy": POLICY,
            "applied": self.cut_ms is not None,
            "min_age_days": self.params.min_age_days,
            "full_age_days": self.params.full_age_days,
        }
        if self.cut_ms is None:
            return out | {"reason": self.reason}
        return out | {
            "clock": self.clock,
            "cut": datetime.fromtimestamp(self.cut_ms / 1000, UTC).isoformat(timespec="seconds"),
            "accounts": len(self.trust),
            "discounted_accounts": int((self.trust < 1).sum()),
            "excluded_accounts": int((self.trust == 0).sum()),
            "feedback_weight": round(self.weight, 3),
            "discounted_weight": round(self.discounted_weight, 3),
            "discounted_share": round(self.discounted_weight / self.weight, 6) if self.weight else 0.0,
        }


def assess(events: Interactions, params: TrustParams) -> AccountTrust:
    """Trust of every listener of an event log by its age at the log's newest event.

    Parameters
    ----------
    events : Interactions
        A feedback event log as loaded (its ``row_meta`` holds each listener's first and
        last event time, :mod:`recsys.data.accounts`).
    params : TrustParams

    Returns
    -------
    AccountTrust
        All ones, with the reason, when disabled or when the log has no event times.
    """
    full = np.ones(events.n_rows, np.float32)
    if not params.enabled:
        return AccountTrust(full, params, reason="disabled")
    meta = events.row_meta
    if meta is None:
        log.warning("account trust not applied: the feedback log has no event times")
        return AccountTrust(full, params, reason="the feedback log has no ts or received_ms column")
    first = meta.column("first_ms").to_numpy().astype(np.int64)
    cut = int(meta.column("last_ms").to_numpy().max())
    trust = age_trust((cut - first) / DAY_MS, params)
    magnitude = np.bincount(events.rows, weights=np.abs(events.weights), minlength=events.n_rows)
    clock = (meta.schema.metadata or {}).get(b"clock", b"ts").decode()
    result = AccountTrust(
        trust,
        params,
        cut_ms=cut,
        clock=clock,
        weight=float(magnitude.sum()),
        discounted_weight=float((magnitude * (1.0 - trust)).sum()),
    )
    summary = result.summary()
    log.info(
        "account trust: %d of %d accounts discounted (%d excluded), %.2f%% of the feedback weight",
        summary["discounted_accounts"],
        summary["accounts"],
        summary["excluded_accounts"],
        100 * summary["discounted_share"],
    )
    return result
