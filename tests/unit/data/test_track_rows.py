"""Track rows: sorted distinct indices per playlist, as a binary CSR matrix would hold them."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from recsys.data.track_rows import TrackRows

ROWS = st.lists(st.lists(st.integers(0, 30), max_size=10), min_size=1, max_size=5)


def _csr(rows: list[list[int]]) -> sp.csr_matrix:
    matrix = sp.lil_matrix((len(rows), 31), dtype=np.float32)
    for i, row in enumerate(rows):
        for track in row:
            matrix[i, track] = 1
    return matrix.tocsr()


@given(rows=ROWS)
def test_rows_hold_what_a_binary_csr_matrix_holds(rows: list[list[int]]) -> None:
    ours, csr = TrackRows.of([np.array(r, np.int64) for r in rows]), _csr(rows)
    csr.sort_indices()
    np.testing.assert_array_equal(ours.indptr, csr.indptr)
    np.testing.assert_array_equal(ours.indices, csr.indices)
    assert len(ours) == len(rows)
    assert [ours.row(i).tolist() for i in range(len(rows))] == [sorted(set(r)) for r in rows]


@given(
    pair=ROWS.flatmap(
        lambda a: st.tuples(
            st.just(a), st.lists(st.lists(st.integers(0, 30), max_size=10), min_size=len(a), max_size=len(a))
        )
    )
)
def test_union_is_row_by_row(pair: tuple[list[list[int]], list[list[int]]]) -> None:
    a, b = pair
    union = TrackRows.of([np.array(r, np.int64) for r in a]).union(
        TrackRows.of([np.array(r, np.int64) for r in b])
    )
    assert [union.row(i).tolist() for i in range(len(a))] == [
        sorted(set(x) | set(y)) for x, y in zip(a, b, strict=True)
    ]


def test_keep_drops_entries_and_their_rows_shrink() -> None:
    rows = TrackRows.of([np.array([3, 1, 2]), np.array([], np.int64), np.array([7, 5])])
    kept = rows.keep(np.array([True, False, True, False, True]))
    assert [kept.row(i).tolist() for i in range(3)] == [[1, 3], [], [7]]
    np.testing.assert_array_equal(kept.indptr, [0, 2, 2, 3])
