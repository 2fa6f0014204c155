"""Simulated listeners with hidden tastes, for closing the loop without real users.

The synthetic data sets (:mod:`recsys.data.synth`) draw every playlist from latent styles
grouped into genres; the same spec and seed give back each track's style. A simulated
listener has a hidden primary style and a second one; their affinity for a track is high
for their primary style, medium for the rest of its genre or their second style, low
otherwise. Listening follows affinity: a track is completed with probability rising with
affinity, or skipped after a few seconds; a completed favourite is sometimes loved, a
skipped misfit sometimes hated. A model that recommends closer to the hidden tastes earns
more listening time per listener, which is what the experiments measure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.synth import STYLES_PER_GENRE, SynthData
from recsys.events.weights import FeedbackType

TRACK_MS = 210_000
AFFINITY = {"primary": 1.0, "related": 0.55, "other": 0.08}
LOVE_CHANCE = 0.15
HATE_CHANCE = 0.25
SKIP_MS = (2_000, 30_000)
PLATFORMS = {"ios": 0.45, "android": 0.40, "web": 0.15}
COUNTRIES = {"US": 0.4, "DE": 0.25, "BR": 0.2, "JP": 0.15}
"""Where simulated listeners listen from: their events carry it, so experiments have slices."""


@dataclass(frozen=True)
class Listener:
    """One simulated listener and their hidden tastes (style indices)."""

    user_id: str
    primary: int
    secondary: int
    platform: str = "web"
    country: str = "US"


@dataclass(frozen=True)
class Listen:
    """What a listener did with one recommended track (one or two feedback events)."""

    track_id: str
    events: tuple[tuple[FeedbackType, int | None], ...]
    listen_ms: int


class TasteModel:
    """Ground-truth affinities over a synthetic catalogue.

    Parameters
    ----------
    data : SynthData
        The generated data set the served model was trained on (same spec and seed).
    """

    def __init__(self, data: SynthData) -> None:
        self.track_style = data.track_style
        self.track_ids = data.track_ids()
        self._index = {t: i for i, t in enumerate(self.track_ids)}
        counts = np.bincount(data.track_style[data.tracks], minlength=int(data.track_style.max()) + 1)
        self.style_weight = counts / counts.sum()

    def listeners(self, n: int, *, seed: int, prefix: str = "sim") -> list[Listener]:
        """``n`` listeners whose primary styles follow the styles' share of playlist entries."""
        rng = np.random.default_rng(seed)
        styles = len(self.style_weight)
        primary = rng.choice(styles, n, p=self.style_weight)
        genre = primary // STYLES_PER_GENRE
        secondary = genre * STYLES_PER_GENRE + rng.integers(0, STYLES_PER_GENRE, n)
        platforms = rng.choice(list(PLATFORMS), n, p=list(PLATFORMS.values()))
        countries = rng.choice(list(COUNTRIES), n, p=list(COUNTRIES.values()))
        return [
            Listener(f"{prefix}-{seed}-{i}", int(p), int(s), str(platform), str(country))
            for i, (p, s, platform, country) in enumerate(
                zip(primary, secondary, platforms, countries, strict=True)
            )
        ]

    def affinity(self, listener: Listener, track_id: str) -> float:
        """How much ``listener`` likes a track (0..1); unknown tracks are misfits."""
        index = self._index.get(track_id)
        if index is None:
            return AFFINITY["other"]
        style = int(self.track_style[index])
        if style == listener.primary:
            return AFFINITY["primary"]
        if style == listener.secondary or style // STYLES_PER_GENRE == listener.primary // STYLES_PER_GENRE:
            return AFFINITY["related"]
        return AFFINITY["other"]

    def seed_tracks(self, listener: Listener, n: int, rng: np.random.Generator) -> list[str]:
        """``n`` tracks of the listener's primary style (what they would start a playlist with)."""
        candidates = np.flatnonzero(self.track_style == listener.primary)
        if len(candidates) == 0:
            return []
        picked = rng.choice(candidates, min(n, len(candidates)), replace=False)
        return [self.track_ids[i] for i in picked]

    def listen(self, listener: Listener, track_id: str, rng: np.random.Generator) -> Listen:
        """The listener's reaction to one recommended track."""
        affinity = self.affinity(listener, track_id)
        if rng.random() < affinity:
            events: list[tuple[FeedbackType, int | None]] = [(FeedbackType.COMPLETE, TRACK_MS)]
            if affinity >= AFFINITY["primary"] and rng.random() < LOVE_CHANCE:
                events.append((FeedbackType.LOVE, None))
            return Listen(track_id, tuple(events), TRACK_MS)
        heard = int(rng.integers(*SKIP_MS))
        events = [(FeedbackType.SKIP, heard)]
        if affinity <= AFFINITY["other"] and rng.random() < HATE_CHANCE:
            events.append((FeedbackType.HATE, None))
        return Listen(track_id, tuple(events), heard)
