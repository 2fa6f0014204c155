"""Art of the Mix 2011 playlist segments (McFee & Lanckriet): ``category \\t split \\t songs``."""

from __future__ import annotations

from pathlib import Path

from recsys.data.interaction_table import Interactions, Lineage
from recsys.data.lineage import file_sha256
from recsys.data.playlists import from_playlists
from recsys.errors import DataFormatError, EmptyDataError

SONGS_FIELD = 2


def read_aotm(path: Path) -> Interactions:
    """Load AotM-2011 segments; the authors' train/test column is ignored (our split applies)."""
    playlist_ids: list[str] = []
    tracks: list[list[str]] = []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                fields = raw.decode("utf-8").rstrip("\r\n").split("\t")
            except UnicodeDecodeError as exc:
                raise DataFormatError(path, "not UTF-8 text", line=number) from exc
            if number == 1:
                continue
            if len(fields) <= SONGS_FIELD:
                raise DataFormatError(path, "expected 'category<TAB>split<TAB>songs'", line=number)
            songs = fields[SONGS_FIELD].split()
            if songs:
                playlist_ids.append(f"aotm-{number - 1}")
                tracks.append(songs)
    if not tracks:
        raise EmptyDataError(f"{path}: no playlist segments")
    lineage = Lineage([str(path)], file_sha256(path), sum(map(len, tracks)), "aotm")
    return from_playlists(playlist_ids, tracks, lineage=lineage)
