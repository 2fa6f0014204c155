"""Hidden tastes: affinity by style, and listening that follows it."""

from __future__ import annotations

import numpy as np

from recsys.data.listeners import AFFINITY, Listener, TasteModel
from recsys.data.synth import STYLES_PER_GENRE, SynthSpec, generate
from recsys.events.weights import FeedbackType


def test_listening_follows_the_hidden_affinity() -> None:
    model = TasteModel(generate(SynthSpec(playlists=300, tracks=3000, seed=2)))
    listener = model.listeners(1, seed=0)[0]
    styles = model.track_style
    mine = [model.track_ids[i] for i in np.flatnonzero(styles == listener.primary)[:50]]
    other_genre = [
        model.track_ids[i]
        for i in np.flatnonzero(styles // STYLES_PER_GENRE != listener.primary // STYLES_PER_GENRE)[:50]
    ]
    assert {model.affinity(listener, t) for t in mine} == {AFFINITY["primary"]}
    assert {model.affinity(listener, t) for t in other_genre} <= {AFFINITY["other"], AFFINITY["related"]}
    assert model.affinity(listener, "not-a-track") == AFFINITY["other"]
    rng = np.random.default_rng(0)
    loved = [model.listen(listener, t, rng) for t in mine]
    assert all(h.events[0][0] is FeedbackType.COMPLETE for h in loved)  # affinity 1: always completed
    assert any((FeedbackType.LOVE, None) in h.events for h in loved)
    misfits = [
        model.listen(Listener("x", listener.primary, listener.primary), t, rng) for t in other_genre * 4
    ]
    skipped = [h for h in misfits if h.events[0][0] is FeedbackType.SKIP]
    assert len(skipped) > len(misfits) * 0.5 and any((FeedbackType.HATE, None) in h.events for h in skipped)
    assert np.mean([h.listen_ms for h in loved]) > 3 * np.mean([h.listen_ms for h in misfits])
    seeds = model.seed_tracks(listener, 5, rng)
    assert len(seeds) == 5 and all(model.affinity(listener, t) == AFFINITY["primary"] for t in seeds)
