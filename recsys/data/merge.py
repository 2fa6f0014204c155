"""Adding listeners' feedback to a playlist data set, for retraining on both."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.idmap import IdMap
from recsys.data.interaction_table import Interactions, Lineage

LISTENER_PREFIX = "user:"
"""Row id prefix of a listener's feedback row, so it never collides with a playlist id."""


def with_feedback(base: Interactions, feedback: Interactions) -> tuple[Interactions, dict[str, int]]:
    """``base`` plus one row per listener of ``feedback``, on ``base``'s catalogue.

    Feedback on tracks outside the catalogue is dropped (the catalogue, its metadata and
    the serving index stay those of ``base``). Listener rows are named
    ``user:<user_id>``.

    Parameters
    ----------
    base : Interactions
        Playlists and their tracks.
    feedback : Interactions
        Listener x track weights from an event log (:mod:`recsys.events.weights`).

    Returns
    -------
    (merged, counts)
        The merged table, and ``listeners``, ``feedback_pairs`` and ``unknown_track_pairs``.
    """
    found = pc.index_in(
        feedback.item_ids.ids.cast(pa.string()), value_set=base.item_ids.ids.cast(pa.string())
    )
    known = found.is_valid().to_numpy(zero_copy_only=False)
    item_map = found.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int32)
    keep = known[feedback.items]
    users = pc.binary_join_element_wise(LISTENER_PREFIX, feedback.row_ids.ids.cast(pa.string()), "")
    row_ids = IdMap(pa.concat_arrays([base.row_ids.ids.cast(pa.string()), users]))
    merged = Interactions(
        np.concatenate([base.rows, feedback.rows[keep] + base.n_rows]).astype(np.int32),
        np.concatenate([base.items, item_map[feedback.items[keep]]]).astype(np.int32),
        np.concatenate([base.weights, feedback.weights[keep]]).astype(np.float32),
        row_ids,
        base.item_ids,
        track_meta=base.track_meta,
        lineage=_lineage(base.lineage, feedback.lineage),
    )
    counts = {
        "listeners": feedback.n_rows,
        "feedback_pairs": int(keep.sum()),
        "unknown_track_pairs": int((~keep).sum()),
    }
    return merged, counts


def _lineage(base: Lineage | None, feedback: Lineage | None) -> Lineage | None:
    if base is None or feedback is None:
        return base or feedback
    digest = hashlib.sha256(f"{base.content_sha256}+{feedback.content_sha256}".encode()).hexdigest()
    return Lineage(
        paths=base.paths + feedback.paths,
        content_sha256=digest,
        rows_read=base.rows_read + feedback.rows_read,
        format=f"{base.format}+{feedback.format}",
    )
