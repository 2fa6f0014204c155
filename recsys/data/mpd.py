"""Spotify Million Playlist Dataset JSON slices (``mpd.slice.*.json``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from recsys.data.interaction_table import Interactions, Lineage
from recsys.data.lineage import files_sha256
from recsys.data.playlists import from_playlists
from recsys.errors import DataFormatError, EmptyDataError

SLICE_PATTERN = "mpd.slice.*.json"
_SLICE_START = re.compile(r"mpd\.slice\.(\d+)-")


def slice_files(path: Path) -> list[Path]:
    """The slice files of a folder (or the one file given), in playlist order."""
    if path.is_file():
        return [path]
    files = list(path.glob(SLICE_PATTERN))
    return sorted(files, key=lambda p: (int(m.group(1)) if (m := _SLICE_START.match(p.name)) else 0, p.name))


def read_mpd(path: Path) -> Interactions:
    """Load MPD slices: ``playlists[].pid`` and ``playlists[].tracks[]`` ordered by ``pos``.

    Track metadata (``track_name``, ``artist_name``, ``duration_ms``) is kept.
    """
    files = slice_files(path)
    if not files:
        raise DataFormatError(path, f"no {SLICE_PATTERN} files")
    playlist_ids: list[str] = []
    tracks: list[list[str]] = []
    meta: dict[str, tuple[str, str, int]] = {}
    for file in files:
        for pid, uris in _read_slice(file, meta):
            playlist_ids.append(pid)
            tracks.append(uris)
    if not tracks:
        raise EmptyDataError(f"{path}: no playlists in {len(files)} slice file(s)")
    meta_table = pa.table(
        {
            "track_id": list(meta),
            "title": [m[0] for m in meta.values()],
            "artist": [m[1] for m in meta.values()],
            "duration_ms": pa.array([m[2] for m in meta.values()], pa.int64()),
        }
    )
    lineage = Lineage([str(f) for f in files], files_sha256(files), sum(map(len, tracks)), "mpd")
    return from_playlists(playlist_ids, tracks, lineage=lineage, track_meta=meta_table)


def _read_slice(file: Path, meta: dict[str, tuple[str, str, int]]) -> list[tuple[str, list[str]]]:
    try:
        document = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataFormatError(file, "not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise DataFormatError(file, f"invalid JSON: {exc.msg}", line=exc.lineno) from exc
    playlists = document.get("playlists") if isinstance(document, dict) else None
    if not isinstance(playlists, list):
        raise DataFormatError(file, "no 'playlists' list at the top level")
    return [_playlist(file, i, p, meta) for i, p in enumerate(playlists)]


def _playlist(
    file: Path, i: int, playlist: Any, meta: dict[str, tuple[str, str, int]]
) -> tuple[str, list[str]]:
    try:
        pid = str(playlist["pid"])
        entries = sorted(playlist["tracks"], key=lambda t: t.get("pos", 0))
        uris = [str(t["track_uri"]) for t in entries]
    except (KeyError, TypeError) as exc:
        raise DataFormatError(file, f"playlists[{i}] lacks {exc} (needs pid and tracks[].track_uri)") from exc
    for track in entries:
        if track["track_uri"] not in meta:
            meta[track["track_uri"]] = (
                str(track.get("track_name", "")),
                str(track.get("artist_name", "")),
                int(track.get("duration_ms") or 0),
            )
    return pid, uris


def write_slice(path: Path, playlists: list[dict[str, Any]], *, start: int) -> None:
    """Write one slice file in the MPD schema (``info`` + ``playlists``)."""
    document = {
        "info": {
            "generated_on": "synthetic",
            "slice": f"{start}-{start + len(playlists) - 1}",
            "version": "v1",
        },
        "playlists": playlists,
    }
    path.write_text(json.dumps(document), encoding="utf-8")
