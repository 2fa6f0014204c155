"""How often one track fills the top slots of test playlists, and the lift an attack gives it."""

from __future__ import annotations

import numpy as np

EXPOSURE_K = 20
"""Top slots counted: about what a listener sees of one recommendation list."""


def exposure_slots(recommended: np.ndarray, track: int, *, k: int = EXPOSURE_K) -> int:
    """Number of top-``k`` slots, over all lists, that hold ``track`` (one per list at most).

    Parameters
    ----------
    recommended : ndarray of int, shape (lists, at least k)
        Ranked track indices per list (-1 for an empty slot).
    track : int
    k : int

    Returns
    -------
    int
        The track's share of the top-``k`` slots is this over ``lists * k``.
    """
    return int((recommended[:, :k] == track).sum())


def exposure_lift(attacked: int, clean: int) -> float:
    """Exposure with an attack over exposure without it, both in slots, each floored at one slot.

    A cold target is usually in no list at all without the attack; counting that as one
    slot makes the lift the number of slots the attack won (a lift of 1: no gain), and a
    defense that leaves the target in no list gets a lift of 1, not 0/0.
    """
    return max(attacked, 1) / max(clean, 1)
