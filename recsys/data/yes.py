"""The Yes.com playlist format (Chen et al., KDD 2012): ``train.txt`` + ``song_hash.txt``."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from recsys.data.interaction_table import Interactions, Lineage
from recsys.data.lineage import files_sha256
from recsys.data.playlists import from_playlists
from recsys.errors import DataFormatError, EmptyDataError

PLAYLISTS_FILE = "train.txt"
SONGS_FILE = "song_hash.txt"
HEADER_LINES = 2


def read_yes(path: Path) -> Interactions:
    """Load Yes.com playlists from a folder (or its ``train.txt``).

    Line 1 of ``train.txt`` lists song ids, line 2 their counts; every further
    line is one playlist of space-separated integer song ids. ``song_hash.txt``
    (``id \\t title \\t artist``), when present, gives track metadata.
    """
    folder = path.parent if path.is_file() else path
    playlists_path = folder / PLAYLISTS_FILE
    if not playlists_path.exists():
        raise DataFormatError(folder, f"no {PLAYLISTS_FILE} (the Yes.com format needs it)")
    playlist_ids, tracks = _read_playlists(playlists_path)
    songs_path = folder / SONGS_FILE
    meta = _read_songs(songs_path) if songs_path.exists() else None
    files = [playlists_path] + ([songs_path] if meta is not None else [])
    lineage = Lineage([str(p) for p in files], files_sha256(files), sum(map(len, tracks)), "yes")
    return from_playlists(playlist_ids, tracks, lineage=lineage, track_meta=meta)


def _read_playlists(path: Path) -> tuple[list[str], list[list[str]]]:
    playlist_ids: list[str] = []
    tracks: list[list[str]] = []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number <= HEADER_LINES:
                continue
            fields = _decode(path, raw, number).split()
            if not all(f.isdigit() for f in fields):
                bad = next(f for f in fields if not f.isdigit())
                raise DataFormatError(path, f"song id {bad!r} is not an integer", line=number)
            if fields:
                playlist_ids.append(f"yes-{number - HEADER_LINES}")
                tracks.append(fields)
    if not tracks:
        raise EmptyDataError(f"{path}: no playlists after the two header lines")
    return playlist_ids, tracks


def _read_songs(path: Path) -> pa.Table:
    ids, titles, artists = [], [], []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            fields = _decode(path, raw, number).rstrip("\r\n").split("\t")
            if len(fields) < 3:
                raise DataFormatError(path, "expected 'id<TAB>title<TAB>artist'", line=number)
            ids.append(fields[0].strip())
            titles.append(fields[1].strip())
            artists.append(fields[2].strip())
    return pa.table({"track_id": ids, "title": titles, "artist": artists})


def _decode(path: Path, raw: bytes, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, "not UTF-8 text", line=number) from exc
