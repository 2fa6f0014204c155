"""Id maps: dense, round-trip, persist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from recsys.data.idmap import IdMap


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=60))
def test_encode_round_trips(values: list[str]) -> None:
    idmap, indices = IdMap.encode(pa.array(values))
    assert len(idmap) == len(set(values))
    assert idmap.externals(indices) == values
    assert sorted(set(indices.tolist())) == list(range(len(idmap)))
    assert all(idmap.index(v) == i for v, i in zip(values, indices.tolist(), strict=True))


def test_save_and_load(tmp_path: Path) -> None:
    idmap = IdMap(["a", "b,c", 'd"e', "ünï"])
    idmap.save(tmp_path / "ids.arrow")
    loaded = IdMap.load(tmp_path / "ids.arrow")
    assert loaded.externals(np.arange(4)) == ["a", "b,c", 'd"e', "ünï"]
    assert loaded.get("missing") is None and "b,c" in loaded
    np.testing.assert_array_equal(loaded.indices(["ünï", "zz", "a"]), [3, 0])


def test_a_large_map_looks_up_every_id_and_survives_a_release() -> None:
    ids = [f"track:{i}" for i in range(20_000)]  # several look-up dicts
    idmap = IdMap(ids)
    assert [idmap.index(t) for t in ids[::997]] == list(range(0, 20_000, 997))
    assert idmap.get("track:20000") is None and "track:19999" in idmap and 5 not in idmap
    idmap.release()
    assert idmap._index is None  # freed ...
    assert idmap.index("track:12345") == 12345  # ... and built again when needed
