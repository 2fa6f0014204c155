"""CSV/TSV/Parquet loading, and the errors bad files get."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.data.formats import DataFormat, detect, load
from recsys.data.interaction_files import DuplicatePolicy
from recsys.errors import DataFormatError, EmptyDataError
from recsys.events.weights import HATE_WEIGHT, LOVE_WEIGHT


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_csv_with_weights_and_ts(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "playlist_id,track_id,weight,ts\np1,a,2.5,10\np1,b,1,11\np2,a,1,3\n")
    data = load(path)
    assert data.stats() == {"playlists": 2, "tracks": 2, "interactions": 3}
    assert data.item_ids.externals(data.items) == ["a", "b", "a"]
    np.testing.assert_allclose(data.weights, [2.5, 1, 1])
    assert data.ts is not None and list(data.ts) == [10, 11, 3]
    assert (
        data.lineage is not None and data.lineage.format == "csv" and len(data.lineage.content_sha256) == 64
    )


def test_weight_defaults_to_one_and_user_id_is_accepted(tmp_path: Path) -> None:
    data = load(write(tmp_path, "d.tsv", "user_id\ttrack_id\nu1\tx\nu1\ty\n"))
    assert detect(tmp_path / "d.tsv") is DataFormat.TSV
    np.testing.assert_allclose(data.weights, [1, 1])
    assert data.ts is None


def test_quoted_ids_with_commas_and_quotes(tmp_path: Path) -> None:
    text = 'playlist_id,track_id\n"p,1","say ""hi"""\n"p,1",b\n'
    data = load(write(tmp_path, "d.csv", text))
    assert data.row_ids.externals(np.array([0])) == ["p,1"]
    assert 'say "hi"' in data.item_ids


def test_unquoted_comma_in_id_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "playlist_id,track_id\np1,a\np1,b,c\n")
    with pytest.raises(DataFormatError, match=r"d\.csv:3: expected 2 fields, found 3 \(quote ids"):
        load(path)


def test_missing_column(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"d\.csv:1: missing column\(s\) track_id"):
        load(write(tmp_path, "d.csv", "playlist_id,song\np1,a\n"))


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", b"playlist_id,track_id\np1,a\np1,caf\xe9\n")
    with pytest.raises(DataFormatError, match=r"d\.csv:3: not UTF-8"):
        load(path)


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    with pytest.raises(EmptyDataError, match="empty file"):
        load(write(tmp_path, "e.csv", ""))
    with pytest.raises(EmptyDataError, match="no rows"):
        load(write(tmp_path, "h.csv", "playlist_id,track_id\n"))


def test_bad_number_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "playlist_id,track_id,weight\np1,a,1\np1,b,lots\n")
    with pytest.raises(DataFormatError, match=r"d\.csv:3: column weight: 'lots' is not a number"):
        load(path)


def test_empty_id_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"d\.csv:3: empty track_id"):
        load(write(tmp_path, "d.csv", "playlist_id,track_id\np1,a\np1,\n"))


def test_duplicates_are_an_error_naming_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "playlist_id,track_id,weight\np1,a,1\np2,a,1\np1,a,3\n")
    with pytest.raises(DataFormatError, match=r"d\.csv:4: duplicated row \(same playlist, track as line 2\)"):
        load(path)


@pytest.mark.parametrize(("policy", "expected"), [(DuplicatePolicy.SUM, 4.0), (DuplicatePolicy.MAX, 3.0)])
def test_duplicates_can_be_merged(tmp_path: Path, policy: DuplicatePolicy, expected: float) -> None:
    path = write(tmp_path, "d.csv", "playlist_id,track_id,weight\np1,a,1\np2,a,1\np1,a,3\n")
    data = load(path, duplicates=policy)
    assert len(data) == 2
    merged = data.to_csr()[data.row_ids.index("p1"), data.item_ids.index("a")]
    assert merged == pytest.approx(expected)


def test_same_pair_at_different_times_is_not_a_duplicate(tmp_path: Path) -> None:
    data = load(write(tmp_path, "d.csv", "playlist_id,track_id,ts\np1,a,1\np1,a,2\n"))
    assert len(data) == 2


def test_parquet_round_trip_with_dictionary_ids(tmp_path: Path) -> None:
    table = pa.table(
        {
            "playlist_id": pa.array(["p1", "p1", "p2"]).dictionary_encode(),
            "track_id": pa.array(["a", "b", "a"]).dictionary_encode(),
            "weight": pa.array([1.0, 2.0, 1.0], pa.float64()),
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    data = load(tmp_path / "d.parquet")
    assert data.stats() == {"playlists": 2, "tracks": 2, "interactions": 3}
    assert data.weights.dtype == np.float32


def test_corrupt_parquet(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="not a readable Parquet file"):
        load(write(tmp_path, "d.parquet", b"PAR1 nonsense"))


def test_event_log_uses_feedback_weighting(tmp_path: Path) -> None:
    text = (
        "user_id,track_id,type,listen_ms,duration_ms,ts\n"
        "u1,a,play,100000,200000,1\n"
        "u1,a,love,,,2\n"
        "u1,b,play,200000,200000,3\n"
        "u1,b,hate,,,4\n"
        "u1,c,hate,,,5\n"
        "u1,c,unhate,,,6\n"
    )
    data = load(write(tmp_path, "events.csv", text.replace(",,,", ",0,0,")))
    matrix = data.to_csr()
    u = data.row_ids.index("u1")
    assert matrix[u, data.item_ids.index("a")] == pytest.approx(0.5 + LOVE_WEIGHT)
    assert matrix[u, data.item_ids.index("b")] == pytest.approx(HATE_WEIGHT)
    assert "c" not in {data.item_ids.external(i) for i in data.items}


def test_unknown_event_type(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="unknown feedback type 'like'"):
        load(write(tmp_path, "e.csv", "user_id,track_id,type\nu1,a,like\n"))


def test_missing_path() -> None:
    with pytest.raises(DataFormatError, match="no such file"):
        load(Path("/nonexistent/data.csv"))
