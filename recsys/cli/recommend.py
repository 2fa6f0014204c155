"""``recsys recommend``: batch next-track recommendations for playlists in a JSONL file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from recsys.cli.common import RegistryOption, console
from recsys.errors import DataFormatError
from recsys.registry.store import FileRegistry
from recsys.scoring.recommender import MAX_K, Query, VersionRecommender
from recsys.settings import DEFAULT_REGISTRY

BATCH = 256


def recommend(
    input_path: Annotated[
        Path,
        typer.Option("--input", "-i", help='JSONL: {"playlist_id": "...", "tracks": ["..."]} per line.'),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL output, one line per input line.")],
    model: Annotated[
        str, typer.Option("--model", help="Version, production, candidate or latest.")
    ] = "production",
    k: Annotated[int, typer.Option("--k", min=1, max=MAX_K, help="Tracks per playlist.")] = 500,
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Recommend next tracks for each playlist; unseen playlists are folded in from their tracks."""
    reg = FileRegistry(registry)
    recommender = VersionRecommender(reg.load(model))
    queries = list(_read_queries(input_path, k))
    with (
        output.open("w", encoding="utf-8") as out,
        Progress(console=console, transient=True) as progress,
    ):
        task = progress.add_task(f"recommending with {recommender.version}", total=len(queries))
        for start in range(0, len(queries), BATCH):
            for rec in recommender.recommend(queries[start : start + BATCH]):
                line = {
                    "playlist_id": rec.playlist_id,
                    "tracks": rec.tracks,
                    "scores": [round(s, 6) for s in rec.scores],
                    "model_version": rec.model_version,
                }
                out.write(json.dumps(line) + "\n")
            progress.advance(task, min(BATCH, len(queries) - start))
    console.print(
        f"{len(queries):,} playlists -> {output} (model {recommender.version}, {recommender.provider})"
    )


def _read_queries(path: Path, k: int) -> Iterator[Query]:
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise DataFormatError(path, f"cannot read ({exc.strerror})") from exc
    with fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataFormatError(path, f"not a JSON line ({exc})", line=number) from exc
            tracks = record.get("tracks", []) if isinstance(record, dict) else None
            if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
                raise DataFormatError(path, '"tracks" must be a list of track id strings', line=number)
            pid = record.get("playlist_id")
            yield Query(playlist_id=None if pid is None else str(pid), tracks=tracks, k=k)
