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
