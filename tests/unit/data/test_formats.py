"""The Yes.com, AotM and Million Playlist Dataset loaders, and the synthetic generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.data.formats import DataFormat, detect, load, write_synth
from recsys.data.synth import MAX_LENGTH, MIN_LENGTH, SynthSpec, generate
from recsys.errors import DataFormatError, EmptyDataError


def yes_folder(tmp_path: Path, playlists: str) -> Path:
    (tmp_path / "train.txt").write_text("100 101 102\n5 6 7\n" + playlists)
    (tmp_path / "song_hash.txt").write_text("0\tSong A\tArtist A\n1\tSong B\tArtist B\n2\tSong C\tArtist C\n")
    return tmp_path


def test_yes_format(tmp_path: Path) -> None:
    folder = yes_folder(tmp_path, "0 1 2 \n2 2 1 \n\n1 \n")
    assert detect(folder) is DataFormat.YES
    data = load(folder)
    assert data.stats() == {"playlists": 3, "tracks": 3, "interactions": 6}
    assert data.ts is not None and list(data.ts[:3]) == [0, 1, 2]
    assert data.track_meta is not None
    titles = dict(
        zip(
            data.track_meta.column("track_id").to_pylist(),
            data.track_meta.column("title").to_pylist(),
            strict=True,
        )
    )
    assert titles["1"] == "Song B"
    assert data.lineage is not None and len(data.lineage.paths) == 2


def test_yes_bad_id_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"train\.txt:4: song id 'x' is not an integer"):
        load(yes_folder(tmp_path, "0 1 \n1 x \n"))


def test_yes_without_playlists(tmp_path: Path) -> None:
    with pytest.raises(EmptyDataError):
        load(yes_folder(tmp_path, ""))


def test_aotm_segments(tmp_path: Path) -> None:
    path = tmp_path / "aotm.tsv"
    path.write_text("category\tsplit\tsongs\nRock\ttrain\tSOA SOB SOC\nJazz\ttest\tSOC SOD\n")
    assert detect(path) is DataFormat.AOTM
    data = load(path)
    assert data.stats() == {"playlists": 2, "tracks": 4, "interactions": 5}


def test_mpd_slices_round_trip(tmp_path: Path) -> None:
    generated = generate(SynthSpec(playlists=1_500, tracks=3_000, seed=1))
    files = write_synth(generated, tmp_path / "mpd", fmt=DataFormat.MPD)
    assert [f.name for f in files] == ["mpd.slice.0-999.json", "mpd.slice.1000-1999.json"]
    document = json.loads(files[0].read_text())
    first = document["playlists"][0]
    assert {"pid", "tracks"} <= set(first) and {
        "track_uri",
        "artist_name",
        "track_name",
        "duration_ms",
        "pos",
    } <= set(first["tracks"][0])
    data = load(tmp_path / "mpd")
    assert data.stats()["interactions"] == len(generated.tracks)
    assert data.stats()["playlists"] == 1_500
    assert data.track_meta is not None and data.track_meta.column("duration_ms").null_count == 0


def test_mpd_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "mpd.slice.0-999.json"
    path.write_text('{"playlists": [\n{"pid": 1,,}\n]}')
    with pytest.raises(DataFormatError, match=r"mpd\.slice\.0-999\.json:2: invalid JSON"):
        load(path)


def test_mpd_missing_fields(tmp_path: Path) -> None:
    path = tmp_path / "mpd.slice.0-999.json"
    path.write_text(json.dumps({"playlists": [{"pid": 1, "tracks": [{"pos": 0}]}]}))
    with pytest.raises(DataFormatError, match=r"playlists\[0\] lacks 'track_uri'"):
        load(path)


def test_synth_is_reproducible_and_shaped_like_mpd() -> None:
    spec = SynthSpec(playlists=3_000, tracks=20_000, seed=3)
    a, b = generate(spec), generate(spec)
    np.testing.assert_array_equal(a.tracks, b.tracks)
    assert not np.array_equal(a.tracks, generate(SynthSpec(playlists=3_000, tracks=20_000, seed=4)).tracks)
    lengths = np.bincount(a.playlists, minlength=a.n_playlists)
    assert lengths.max() <= MAX_LENGTH and np.median(lengths) >= MIN_LENGTH
    assert 35 <= lengths.mean() <= 90
    counts = np.sort(np.bincount(a.tracks))[::-1]
    assert counts[: len(counts) // 100].sum() > 0.1 * counts.sum()  # top 1% of tracks: over 10% of entries
    assert (counts == 1).mean() > 0.1  # and a long tail of tracks seen once
    pairs = a.playlists.astype(np.int64) * a.n_tracks + a.tracks
    assert len(np.unique(pairs)) == len(pairs)


def test_synth_scale() -> None:
    spec = SynthSpec.at_scale(1.0)
    assert spec.playlists == 1_000_000 and spec.tracks > 2_262_292
    with pytest.raises(ValueError):
        SynthSpec.at_scale(0)
