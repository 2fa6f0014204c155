"""``recsys data``: generate synthetic playlists, inspect a data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsys.cli.common import console, size_line
from recsys.data.formats import DataFormat, load, write_synth
from recsys.data.interaction_files import DuplicatePolicy
from recsys.data.synth import SynthSpec, generate

app = typer.Typer(help="Generate and inspect interaction data.", no_args_is_help=True)


@app.command()
def synth(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="File (.csv/.tsv/.parquet) or folder (--format mpd)."),
    ],
    scale: Annotated[
        float,
        typer.Option(help="Fraction of the Million Playlist Dataset's size (1.0 = 1M playlists)."),
    ] = 0.001,
    playlists: Annotated[int | None, typer.Option(help="Number of playlists (overrides --scale's).")] = None,
    tracks: Annotated[
        int | None, typer.Option(help="Catalog size to draw from (overrides --scale's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 0,
    fmt: Annotated[
        DataFormat, typer.Option("--format", help="Output format (auto: by file suffix).")
    ] = DataFormat.AUTO,
) -> None:
    """Generate playlists shaped like the Million Playlist Dataset (long-tail popularity, latent styles)."""
    spec = SynthSpec.at_scale(scale, seed=seed)
    spec.playlists = playlists or spec.playlists
    spec.tracks = tracks or spec.tracks
    if fmt is DataFormat.AUTO:
        fmt = {".parquet": DataFormat.PARQUET, ".tsv": DataFormat.TSV, ".csv": DataFormat.CSV}.get(
            output.suffix, DataFormat.MPD
        )
    with console.status(f"generating {spec.playlists:,} playlists"):
        generated = generate(spec)
    with console.status(f"writing {fmt.value}"):
        written = write_synth(generated, output, fmt=fmt)
    console.print(
        f"wrote {len(generated.tracks):,} entries: {generated.n_playlists:,} playlists, "
        f"{generated.n_tracks:,} tracks -> {output} ({len(written)} file(s))"
    )


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="Data file or folder.")],
    fmt: Annotated[DataFormat, typer.Option("--format", help="Input format.")] = DataFormat.AUTO,
    duplicates: Annotated[
        DuplicatePolicy, typer.Option(help="Repeated rows: error, sum or max.")
    ] = DuplicatePolicy.ERROR,
) -> None:
    """Load a data set and print its size and lineage (validates it on the way)."""
    data = load(path, fmt, duplicates=duplicates)
    console.print(f"{path}: {size_line(data.stats())}")
    if data.lineage:
        lineage = data.lineage
        console.print(
            f"format {lineage.format}, sha256 {lineage.content_sha256[:16]}…, rows {lineage.rows_read:,}"
        )
