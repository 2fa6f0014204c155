"""Pick a loader by name or by what the path looks like, and write synthetic data to disk."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import numpy as np
import pyarrow as pa

from recsys.data.aotm import read_aotm
from recsys.data.interaction_files import DuplicatePolicy, read_tabular, write_tabular
from recsys.data.interaction_table import Interactions
from recsys.data.mpd import SLICE_PATTERN, read_mpd, write_slice
from recsys.data.synth import SynthData
from recsys.data.yes import PLAYLISTS_FILE, read_yes
from recsys.errors import DataFormatError

MPD_SLICE_SIZE = 1000
AOTM_HEADER = b"category\tsplit\tsongs"


class DataFormat(StrEnum):
    """Input formats ``recsys train --format`` accepts."""

    AUTO = "auto"
    CSV = "csv"
    TSV = "tsv"
    PARQUET = "parquet"
    YES = "yes"
    MPD = "mpd"
    AOTM = "aotm"


def detect(path: Path) -> DataFormat:
    """Guess the format of ``path`` from its name and, for folders, its contents."""
    if not path.exists():
        raise DataFormatError(path, "no such file or folder")
    if path.is_dir():
        if (path / PLAYLISTS_FILE).exists():
            return DataFormat.YES
        if any(path.glob(SLICE_PATTERN)):
            return DataFormat.MPD
        raise DataFormatError(path, f"folder holds neither {PLAYLISTS_FILE} nor {SLICE_PATTERN}")
    if path.name == PLAYLISTS_FILE:
        return DataFormat.YES
    if path.name.startswith("mpd.slice.") and path.suffix == ".json":
        return DataFormat.MPD
    if path.suffix == ".parquet":
        return DataFormat.PARQUET
    with path.open("rb") as fh:
        if fh.read(len(AOTM_HEADER)) == AOTM_HEADER:
            return DataFormat.AOTM
    return DataFormat.TSV if path.suffix in (".tsv", ".tab") else DataFormat.CSV


def load(
    path: Path,
    fmt: DataFormat = DataFormat.AUTO,
    *,
    duplicates: DuplicatePolicy = DuplicatePolicy.ERROR,
) -> Interactions:
    """Load interactions from ``path`` in format ``fmt`` (detected when ``auto``)."""
    fmt = detect(path) if fmt is DataFormat.AUTO else fmt
    if not path.exists():
        raise DataFormatError(path, "no such file or folder")
    if fmt is DataFormat.YES:
        return read_yes(path)
    if fmt is DataFormat.MPD:
        return read_mpd(path)
    if fmt is DataFormat.AOTM:
        return read_aotm(path)
    delimiter = {DataFormat.TSV: "\t", DataFormat.CSV: ","}.get(fmt)
    return read_tabular(path, delimiter=delimiter, duplicates=duplicates)


def write_synth(data: SynthData, path: Path, *, fmt: DataFormat) -> list[Path]:
    """Write generated playlists as CSV/TSV/Parquet (one file) or MPD slices (a folder)."""
    if fmt is DataFormat.MPD:
        return _write_mpd(data, path)
    ids = pa.DictionaryArray.from_arrays(pa.array(data.playlists), pa.array(data.playlist_ids()))
    tracks = pa.DictionaryArray.from_arrays(pa.array(data.tracks), pa.array(data.track_ids()))
    if fmt is not DataFormat.PARQUET:
        ids, tracks = ids.cast(pa.string()), tracks.cast(pa.string())
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = np.ones(len(data.tracks), np.float32)
    write_tabular(path, playlist_ids=ids, track_ids=tracks, weights=weights, ts=data.positions)
    return [path]


def _write_mpd(data: SynthData, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(data.tracks))
    durations = rng.integers(120_000, 330_000, data.n_tracks)
    bounds = np.searchsorted(data.playlists, np.arange(0, data.n_playlists + 1))
    written = []
    for start in range(0, data.n_playlists, MPD_SLICE_SIZE):
        stop = min(start + MPD_SLICE_SIZE, data.n_playlists)
        playlists = [_mpd_playlist(data, pid, bounds, durations) for pid in range(start, stop)]
        file = folder / f"mpd.slice.{start}-{start + MPD_SLICE_SIZE - 1}.json"
        write_slice(file, playlists, start=start)
        written.append(file)
    return written


def _mpd_playlist(data: SynthData, pid: int, bounds: np.ndarray, durations: np.ndarray) -> dict[str, object]:
    tracks = data.tracks[bounds[pid] : bounds[pid + 1]]
    return {
        "name": f"style {int(data.track_style[tracks[0]]) if len(tracks) else 0} mix",
        "pid": pid,
        "num_tracks": len(tracks),
        "tracks": [
            {
                "pos": pos,
                "track_uri": f"spotify:track:tr{t}",
                "track_name": f"Track {t}",
                "artist_name": f"Artist {int(data.track_style[t])}-{t % 97}",
                "duration_ms": int(durations[t]),
            }
            for pos, t in enumerate(tracks.tolist())
        ],
    }
