"""Bidirectional maps between external string ids and dense integer indices."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from recsys.errors import ArtifactCorrupt

LOOKUP_SLICE, LOOKUP_PAUSE_S = 512, 0.0005
SHARD_SIZE = 4096
"""About how many ids one dict of the look-up holds (their number is a power of two)."""


class IdMap:
    """External id <-> dense index, in first-seen order.

    Parameters
    ----------
    ids : sequence of str
        Distinct external ids; index ``i`` maps to ``ids[i]``.
    """

    def __init__(self, ids: Sequence[str] | pa.Array) -> None:
        self._ids = pa.array(ids, type=pa.string()) if not isinstance(ids, pa.Array) else ids
        self._index: _Lookup | None = None
        if pc.count_distinct(self._ids).as_py() != len(self._ids):
            raise ValueError("IdMap ids must be distinct")

    @classmethod
    def encode(cls, values: pa.Array | pa.ChunkedArray) -> tuple[IdMap, np.ndarray]:
        """Map raw id values to indices, building the map in first-seen order.

        Returns
        -------
        (IdMap, ndarray of int32)
        """
        array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if pa.types.is_dictionary(array.type):
            compact = _compact(array)
            if compact is not None:
                return cls(compact[0]), compact[1]
            array = array.cast(pa.string())
        encoded = pc.dictionary_encode(array)
        indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        return cls(encoded.dictionary.cast(pa.string())), indices

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, external_id: object) -> bool:
        return isinstance(external_id, str) and external_id in self._lookup()

    def _lookup(self) -> _Lookup:
        if self._index is None:
            self._index = _Lookup(self._ids)
        return self._index

    def release(self) -> None:
        """Free the id -> index look-up gently; it is built again if the map is used later."""
        lookup, self._index = self._index, None
        if lookup is not None:
            lookup.dismantle()

    def index(self, external_id: str) -> int:
        """Dense index of an external id; raises ``KeyError`` when unknown."""
        return self._lookup()[external_id]

    def get(self, external_id: str) -> int | None:
        """Dense index of an external id, or ``None`` when unknown."""
        return self._lookup().get(external_id)

    def indices(self, external_ids: Iterable[str]) -> np.ndarray:
        """Indices of the known ids among ``external_ids`` (unknown ones are dropped)."""
        lookup = self._lookup()
        return np.fromiter(
            (i for i in (lookup.get(e) for e in external_ids) if i is not None), dtype=np.int64
        )

    def external(self, index: int) -> str:
        """External id at a dense index."""
        return str(self._ids[index].as_py())

    def externals(self, indices: np.ndarray) -> list[str]:
        """External ids for an array of dense indices."""
        return [str(v) for v in self._ids.take(pa.array(indices)).to_pylist()]

    @property
    def ids(self) -> pa.Array:
        """All external ids, in index order."""
        return self._ids

    def save(self, path: Path) -> None:
        """Write the map as an Arrow IPC file with one ``id`` column."""
        table = pa.table({"id": self._ids})
        with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    @classmethod
    def load(cls, path: Path) -> IdMap:
        """Read a map written by :meth:`save`."""
        try:
            with pa.memory_map(str(path), "r") as source:
                table = ipc.open_file(source).read_all()
            return cls(table.column("id").combine_chunks())
        except (pa.ArrowInvalid, OSError, KeyError, ValueError) as exc:
            raise ArtifactCorrupt(f"{path}: unreadable id map ({exc})") from exc


class _Lookup:
    """External id -> dense index, in dicts of at most a few thousand ids each.

    Built in slices that pause between them, and never as one big dict: converting millions
    of ids at once, or one resize of a multi-million-entry dict, holds the GIL for 50-250 ms,
    stalling a server that builds a new version's map while it answers requests.
    """

    def __init__(self, ids: pa.Array) -> None:
        self._mask = (1 << (len(ids) // SHARD_SIZE).bit_length()) - 1
        self._shards: list[dict[str, int]] = [{} for _ in range(self._mask + 1)]
        shards, mask = self._shards, self._mask
        for start in range(0, len(ids), LOOKUP_SLICE):
            for index, key in enumerate(ids.slice(start, LOOKUP_SLICE).to_pylist(), start):
                shards[hash(key) & mask][key] = index
            time.sleep(LOOKUP_PAUSE_S)

    def dismantle(self) -> None:
        """Empty the look-up a dict at a time, pausing between them (freeing it in one go
        would hold the GIL as long as building it in one go)."""
        for shard in range(len(self._shards)):
            self._shards[shard] = {}
            time.sleep(LOOKUP_PAUSE_S)

    def __contains__(self, key: str) -> bool:
        return key in self._shards[hash(key) & self._mask]

    def __getitem__(self, key: str) -> int:
        return self._shards[hash(key) & self._mask][key]

    def get(self, key: str) -> int | None:
        return self._shards[hash(key) & self._mask].get(key)


def _compact(array: pa.DictionaryArray) -> tuple[pa.Array, np.ndarray] | None:
    """An Arrow dictionary without its unused entries, and remapped indices; ``None`` if it has repeats."""
    indices = array.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    used = np.bincount(indices, minlength=len(array.dictionary)) > 0
    dictionary = array.dictionary if used.all() else array.dictionary.filter(pa.array(used))
    if pc.count_distinct(dictionary).as_py() != len(dictionary):
        return None
    if not used.all():
        indices = (np.cumsum(used) - 1).astype(np.int32)[indices]
    return dictionary.cast(pa.string()), indices
