"""Build an interaction table from playlists given as ordered lists of track ids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from recsys.data.idmap import IdMap
from recsys.data.interaction_table import Interactions, Lineage


def from_playlists(
    playlist_ids: Sequence[str],
    tracks: Sequence[Sequence[str]],
    *,
    lineage: Lineage,
    track_meta: pa.Table | None = None,
) -> Interactions:
    """One interaction per distinct (playlist, track), ``ts`` = position of first occurrence.

    Parameters
    ----------
    playlist_ids : sequence of str
        External playlist ids, aligned with ``tracks``.
    tracks : sequence of sequences of str
        Each playlist's track ids in order; repeats within a playlist are merged.
    lineage : Lineage
        Where the playlists came from.
    track_meta : pyarrow.Table, optional
        Metadata with a ``track_id`` column; aligned with the table's track map on return.
    """
    lengths = np.fromiter((len(t) for t in tracks), dtype=np.int64, count=len(tracks))
    flat = pa.array([t for playlist in tracks for t in playlist], type=pa.string())
    item_ids, items = IdMap.encode(flat)
    rows = np.repeat(np.arange(len(playlist_ids), dtype=np.int32), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.arange(len(items), dtype=np.int64) - starts
    key = rows.astype(np.int64) * len(item_ids) + items
    _, first = np.unique(key, return_index=True)
    first.sort()
    non_empty = lengths > 0
    row_ids = IdMap([str(p) for p, keep in zip(playlist_ids, non_empty, strict=True) if keep])
    remap = np.cumsum(non_empty) - 1
    meta = align_meta(track_meta, item_ids) if track_meta is not None else None
    return Interactions(
        remap[rows[first]].astype(np.int32),
        items[first],
        np.ones(len(first), dtype=np.float32),
        row_ids,
        item_ids,
        ts=positions[first],
        track_meta=meta,
        lineage=lineage,
    )


def align_meta(meta: pa.Table, item_ids: IdMap) -> pa.Table:
    """Reorder a metadata table (with ``track_id``) to follow ``item_ids``; missing rows are null."""
    meta_ids = IdMap.encode(meta.column("track_id"))[0]
    positions = [meta_ids.get(t) for t in item_ids.ids.to_pylist()]
    taken = meta.take(pa.array(positions, type=pa.int64()))
    return taken.set_column(taken.column_names.index("track_id"), "track_id", item_ids.ids)
