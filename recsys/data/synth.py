"""Synthetic playlists shaped like the Spotify Million Playlist Dataset.

At ``scale=1.0``: 1,000,000 playlists, about 66M entries, lengths 5..250
(median 49, mean 66), over a catalog sized so that about 2.26M distinct tracks
appear. Tracks belong to latent styles grouped into genres; each playlist mixes a
primary style, a related style and a few global hits, and track popularity is
long-tailed (Zipf) within every style. The same seed gives the same data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from recsys.data.idmap import IdMap
from recsys.data.interaction_table import Interactions, Lineage

MPD_PLAYLISTS = 1_000_000
MPD_TRACKS = 2_262_292
MIN_LENGTH, MAX_LENGTH = 5, 250
LENGTH_MEDIAN, LENGTH_SIGMA = 49.0, 0.85
GENRES, STYLES_PER_GENRE = 40, 10
ZIPF_EXPONENT = 0.95
OVERDRAW = 1.6
"""Entries drawn per wanted entry, so that playlists keep their length after de-duplication."""
HIT_SHARE = 0.08
"""Share of entries drawn from the global popularity distribution."""
CATALOG_EXPONENT = 0.61
"""Distinct tracks grow like playlists**0.61 in MPD (1 slice: ~34k tracks; all: 2.26M)."""


@dataclass
class SynthSpec:
    """Size and shape of a synthetic data set."""

    playlists: int
    tracks: int
    seed: int = 0

    @classmethod
    def at_scale(cls, scale: float, *, seed: int = 0) -> SynthSpec:
        """A fraction of the Million Playlist Dataset's size."""
        if not 0 < scale <= 1:
            raise ValueError("scale must be in (0, 1]")
        playlists = max(10, round(MPD_PLAYLISTS * scale))
        tracks = max(100, round(1.4 * MPD_TRACKS * scale**CATALOG_EXPONENT))
        return cls(playlists=playlists, tracks=tracks, seed=seed)


@dataclass
class SynthData:
    """Generated playlists as parallel arrays (playlist index, track index, position)."""

    playlists: np.ndarray
    tracks: np.ndarray
    positions: np.ndarray
    track_style: np.ndarray
    n_playlists: int
    n_tracks: int

    def playlist_ids(self) -> list[str]:
        return [f"pl{i}" for i in range(self.n_playlists)]

    def track_ids(self) -> list[str]:
        return [f"tr{i}" for i in range(self.n_tracks)]


def generate(spec: SynthSpec) -> SynthData:
    """Draw playlists for ``spec``; reproducible for a given seed."""
    rng = np.random.default_rng(spec.seed)
    styles = GENRES * STYLES_PER_GENRE
    track_style = rng.integers(0, styles, spec.tracks)
    popularity = 1.0 / rng.permutation(np.arange(1, spec.tracks + 1)) ** ZIPF_EXPONENT
    by_style = np.argsort(track_style, kind="stable")
    style_cdf = _stacked_cdf(track_style[by_style], popularity[by_style], styles)
    global_cdf = np.cumsum(popularity) / popularity.sum()

    lengths = np.clip(
        np.round(rng.lognormal(np.log(LENGTH_MEDIAN), LENGTH_SIGMA, spec.playlists)),
        MIN_LENGTH,
        MAX_LENGTH,
    ).astype(np.int64)
    style_weight = 1.0 / np.arange(1, styles + 1) ** 0.8
    primary = rng.choice(styles, spec.playlists, p=style_weight / style_weight.sum())
    related = (primary // STYLES_PER_GENRE) * STYLES_PER_GENRE + rng.integers(
        0, STYLES_PER_GENRE, spec.playlists
    )
    secondary = np.where(rng.random(spec.playlists) < 0.7, related, rng.integers(0, styles, spec.playlists))
    primary_share = rng.beta(5, 2, spec.playlists)

    draws = np.ceil(lengths * OVERDRAW).astype(np.int64) + MIN_LENGTH
    owner = np.repeat(np.arange(spec.playlists, dtype=np.int32), draws)
    use_primary = rng.random(len(owner)) < primary_share[owner]
    entry_style = np.where(use_primary, primary[owner], secondary[owner])
    drawn = by_style[
        np.minimum(np.searchsorted(style_cdf, entry_style + rng.random(len(owner))), spec.tracks - 1)
    ]
    hits = rng.random(len(owner)) < HIT_SHARE
    drawn[hits] = np.minimum(np.searchsorted(global_cdf, rng.random(int(hits.sum()))), spec.tracks - 1)
    return _dedupe(owner, drawn.astype(np.int32), lengths, track_style, spec)


def _stacked_cdf(style_of_sorted: np.ndarray, weight_sorted: np.ndarray, styles: int) -> np.ndarray:
    """Per-style CDFs laid end to end: style ``s`` spans values ``[s, s + 1)``."""
    totals = np.bincount(style_of_sorted, weights=weight_sorted, minlength=styles)
    cumulative = np.cumsum(weight_sorted)
    starts = np.concatenate(([0.0], np.cumsum(totals)[:-1]))
    within = (cumulative - starts[style_of_sorted]) / np.maximum(totals[style_of_sorted], 1e-300)
    stacked: np.ndarray = style_of_sorted + np.minimum(within, 1.0 - 1e-12)
    return stacked


def _dedupe(
    owner: np.ndarray,
    drawn: np.ndarray,
    lengths: np.ndarray,
    track_style: np.ndarray,
    spec: SynthSpec,
) -> SynthData:
    """Keep each track's first occurrence in a playlist, renumber used tracks densely."""
    key = owner.astype(np.int64) * spec.tracks + drawn
    _, first = np.unique(key, return_index=True)
    first.sort()
    owner, drawn = owner[first], drawn[first]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(owner)) + 1))
    counts = np.diff(np.concatenate((starts, [len(owner)])))
    positions = np.arange(len(owner)) - np.repeat(starts, counts)
    keep = positions < lengths[owner]
    owner, drawn, positions = owner[keep], drawn[keep], positions[keep]
    used, dense = np.unique(drawn, return_inverse=True)
    return SynthData(
        playlists=owner,
        tracks=dense.astype(np.int32),
        positions=positions.astype(np.int64),
        track_style=track_style[used],
        n_playlists=spec.playlists,
        n_tracks=len(used),
    )


def to_interactions(data: SynthData) -> Interactions:
    """The generated playlists as an in-memory interaction table (``ts`` = position)."""
    digest = hashlib.sha256(data.playlists.tobytes() + data.tracks.tobytes()).hexdigest()
    lineage = Lineage(["synthetic"], digest, len(data.tracks), "synth")
    return Interactions(
        rows=data.playlists,
        items=data.tracks,
        weights=np.ones(len(data.tracks), dtype=np.float32),
        row_ids=IdMap(data.playlist_ids()),
        item_ids=IdMap(data.track_ids()),
        ts=data.positions,
        lineage=lineage,
    )
