"""The speed layer's vector is the batch fold-in of the listener's feedback against production."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from recsys.data.idmap import IdMap
from recsys.data.interaction_files import read_tabular
from recsys.data.interaction_table import Interactions
from recsys.data.merge import with_feedback
from recsys.errors import EmptyDataError
from recsys.events.schemas import LISTENING_TYPES, FeedbackEvent
from recsys.events.weights import (
    DEFAULT_TRACK_MS,
    HATE_WEIGHT,
    LOVE_WEIGHT,
    PLAY_WEIGHT,
    SKIP_WEIGHT,
    FeedbackType,
)
from recsys.experiments.aggregates import RECENT_PLAYS, apply_to_user
from recsys.models.confidence import Confidence, Weighting
from recsys.models.foldin import FoldIn
from recsys.registry.artifacts import LoadedModel
from recsys.registry.manifest import Manifest, Shapes
from recsys.registry.store import FileRegistry
from streams.speed import SpeedLayer, weight_rows
from training.pipeline import TrainResult

FACTORS = 8
UNKNOWN_TRACK = "not-in-the-catalogue"
START = datetime(2024, 5, 1, tzinfo=UTC)
KINDS = [
    FeedbackType.PLAY,
    FeedbackType.COMPLETE,
    FeedbackType.SKIP,
    FeedbackType.LOVE,
    FeedbackType.UNLOVE,
    FeedbackType.HATE,
    FeedbackType.UNHATE,
]
KIND_ODDS = [0.4, 0.15, 0.2, 0.1, 0.03, 0.08, 0.04]


@dataclass
class OneVersion:
    """A registry holding one production version, in memory."""

    model: LoadedModel

    def production(self) -> str | None:
        return self.model.version

    def load(self, ref: str) -> LoadedModel:
        return self.model


def catalogue_model(tracks: int, seed: int, weighting: Weighting) -> LoadedModel:
    """A production version with random item factors and weighting parameters."""
    rng = np.random.default_rng(seed)
    confidence = (
        Confidence(
            Weighting.BM25,
            k1=float(rng.uniform(1.0, 100.0)),
            b=0.8,  # length normalisation: a missing or extra entry would change every weight
            idf=rng.uniform(0.2, 3.0, tracks).astype(np.float32),
            mean_length=float(rng.uniform(1.0, 20.0)),
        )
        if weighting is Weighting.BM25
        else Confidence(Weighting.LINEAR)
    )
    params = {"regularization": float(rng.uniform(0.1, 50.0)), "alpha": float(rng.uniform(1.0, 40.0))}
    return LoadedModel(
        folder=Path("unused"),
        manifest=Manifest(
            version=f"1.{seed}",
            params=params,
            device="cpu",
            lineage={},
            shapes=Shapes(items=tracks, rows=0, factors=FACTORS),
        ),
        item_factors=rng.normal(0.0, 0.3, (tracks, FACTORS)).astype(np.float32),
        row_factors=np.zeros((0, FACTORS), np.float32),
        row_items=sp.csr_matrix((0, tracks), dtype=np.float32),
        item_ids=IdMap([f"tr{i}" for i in range(tracks)]),
        row_ids=IdMap([]),
        confidence=confidence,
    )


def listener_events(rng: np.random.Generator, count: int, catalogue: list[str]) -> list[FeedbackEvent]:
    """``count`` events of one listener: full, 1-second and partial plays (with and without a
    duration), completes, skips, loves, hates and their undo, on a few tracks that repeat
    (one of them outside the catalogue)."""
    pool_size = min(len(catalogue), max(2, count // 3 + 1))
    pool = [*rng.choice(catalogue, size=pool_size, replace=False).tolist(), UNKNOWN_TRACK]
    events = []
    for i in range(count):
        kind = KINDS[int(rng.choice(len(KINDS), p=KIND_ODDS))]
        duration = int(rng.integers(60_000, 400_000)) if rng.random() < 0.5 else None
        listen = None
        if kind is FeedbackType.PLAY:
            listen = [1_000, int(rng.integers(0, 500_000)), duration or DEFAULT_TRACK_MS][
                int(rng.integers(3))
            ]
        elif kind is FeedbackType.COMPLETE:
            listen = duration or DEFAULT_TRACK_MS
        elif kind is FeedbackType.SKIP:
            listen = int(rng.integers(0, 30_000))
        events.append(
            FeedbackEvent(
                user_id="u",
                track_id=pool[int(rng.integers(len(pool)))],
                type=kind,
                listen_ms=listen,
                duration_ms=duration if kind in LISTENING_TYPES else None,
                ts=START + timedelta(seconds=i),
            )
        )
    return events


def speed_vector(model: LoadedModel, events: list[FeedbackEvent]) -> list[float] | None:
    """The speed layer's vector after ``events``, as the stream worker gets it: the user's state
    folded event by event, through its table (JSON), then the speed layer's update."""
    speed = SpeedLayer(OneVersion(model))
    speed.refresh()
    state: dict[str, Any] = {}
    for event in events:
        state.update(apply_to_user(state, event))
    state = json.loads(json.dumps(state))
    update = speed.updates_for([("u", state, events[-1])])[0]
    assert update.model_version == model.version
    return update.vector


def batch_row(model: LoadedModel, events: list[FeedbackEvent], folder: Path) -> sp.csr_matrix:
    """The listener's row of training's matrix: the events as a feedback log, loaded and merged
    onto the model's catalogue as training loads and merges them."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "feedback.parquet"
    table = pa.table(
        {
            "user_id": pa.array([e.user_id for e in events], pa.string()),
            "track_id": pa.array([e.track_id for e in events], pa.string()),
            "type": pa.array([e.type.value for e in events], pa.string()),
            "listen_ms": pa.array([float(e.listen_ms or 0) for e in events], pa.float64()),
            "duration_ms": pa.array([e.duration_ms for e in events], pa.float64()),
            "ts": pa.array([int(e.ts.timestamp() * 1000) for e in events], pa.int64()),
        }
    )
    pq.write_table(table, path)
    try:
        feedback = read_tabular(path)
    except EmptyDataError:  # every weight came to 0
        return sp.csr_matrix((1, len(model.item_ids)), dtype=np.float32)
    base = Interactions(
        np.zeros(1, np.int32), np.zeros(1, np.int32), np.ones(1, np.float32), IdMap(["p"]), model.item_ids
    )
    merged, _ = with_feedback(base, feedback)
    row: sp.csr_matrix = merged.to_csr()[1:2]
    return row


def batch_vector(model: LoadedModel, row: sp.csr_matrix) -> np.ndarray | None:
    """The batch fold-in of a training row (``None`` without a positive entry, as the speed layer)."""
    if not (row.data > 0).any():
        return None
    params = model.manifest.params
    fold = FoldIn(model.item_factors, regularization=params["regularization"], alpha=params["alpha"])
    vector: np.ndarray = fold.row_vectors(row, model.confidence)[0]
    return vector


def kept(events: list[FeedbackEvent]) -> list[FeedbackEvent]:
    """The events a user's state stands for: its last plays, completes and skips, every love,
    hate and undo."""
    listening = [i for i, e in enumerate(events) if e.type in LISTENING_TYPES]
    dropped = set(listening[:-RECENT_PLAYS])
    return [e for i, e in enumerate(events) if i not in dropped]


@pytest.mark.parametrize("tracks", [10, 200, 2000])
@pytest.mark.parametrize("count", [1, 5, 40, 200])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_speed_layer_vector_is_the_batch_fold_in(tmp_path: Path, seed: int, count: int, tracks: int) -> None:
    model = catalogue_model(tracks, seed, Weighting.BM25 if seed % 2 == 0 else Weighting.LINEAR)
    rng = np.random.default_rng(1000 * seed + count + tracks)
    events = listener_events(rng, count, model.item_ids.externals(np.arange(tracks)))
    expected = batch_vector(model, batch_row(model, kept(events), tmp_path))
    got = speed_vector(model, events)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_speed_layer_vector_is_the_batch_fold_in_with_a_trained_model(
    trained: tuple[FileRegistry, TrainResult], tmp_path: Path
) -> None:
    """The same with a version as training writes it (BM25 IDF and length learnt from the data)."""
    registry, _ = trained
    model = registry.load("production")
    catalogue = model.item_ids.externals(np.arange(len(model.item_ids)))
    for seed in range(3):
        events = listener_events(np.random.default_rng(seed), 60, catalogue)
        expected = batch_vector(model, batch_row(model, kept(events), tmp_path / str(seed)))
        got = speed_vector(model, events)
        if expected is None:
            assert got is None
        else:
            assert got is not None
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_a_one_second_play_weighs_the_same_in_both(tmp_path: Path) -> None:
    model = catalogue_model(50, 3, Weighting.BM25)
    events = [
        FeedbackEvent(user_id="u", track_id="tr0", type=FeedbackType.PLAY, listen_ms=1_000, ts=START),
        FeedbackEvent(
            user_id="u",
            track_id="tr1",
            type=FeedbackType.COMPLETE,
            listen_ms=1,
            ts=START + timedelta(seconds=1),
        ),
    ]
    row = batch_row(model, events, tmp_path)
    assert row[0, 0] == pytest.approx(1_000 / DEFAULT_TRACK_MS)
    state: dict[str, Any] = {}
    for event in events:
        state.update(apply_to_user(state, event))
    speed_row, wanted = weight_rows(model, [json.loads(json.dumps(state))])
    assert wanted.tolist() == [True]
    assert speed_row[0, 0] == row[0, 0] and speed_row[0, 1] == row[0, 1] == PLAY_WEIGHT
    expected = batch_vector(model, row)
    got = speed_vector(model, events)
    assert got is not None and expected is not None
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    as_full = batch_vector(model, sp.csr_matrix(([1.0, 1.0], [0, 1], [0, 2]), shape=row.shape))
    assert as_full is not None and not np.allclose(got, as_full, rtol=1e-3)


def test_skips_count_as_dislikes_and_unknown_tracks_are_left_out() -> None:
    model = catalogue_model(20, 4, Weighting.LINEAR)
    state = {
        "recent": [["tr1", "complete", 1], ["tr2", "skip", 3_000], [UNKNOWN_TRACK, "complete", 1]],
        "loved": ["tr3"],
    }
    rows, wanted = weight_rows(model, [state, {"recent": [["tr2", "skip", 3_000]]}])
    assert rows[0, 1] == PLAY_WEIGHT and rows[0, 2] == SKIP_WEIGHT and rows[0, 3] == LOVE_WEIGHT
    assert rows[0].nnz == 3 and rows.shape == (2, 20)
    assert wanted.tolist() == [True, False]  # only a dislike: nothing to fold in


def test_vector_hates_and_model_version(trained: tuple[FileRegistry, TrainResult]) -> None:
    """A state whose recent plays are bare track ids (written before listening records were kept)
    counts each as a complete."""
    registry, _ = trained
    speed = SpeedLayer(registry)
    assert speed.updates_for([("u", {"loved": ["tr1"]}, None)])[0].vector is None  # no model loaded yet
    speed.refresh()
    model = registry.load("production")
    tracks = model.item_ids.externals(np.array([0, 1, 2]))
    state = {"loved": [tracks[0]], "recent": [tracks[1], tracks[0]], "hated": [tracks[2]]}
    other = {"recent": [tracks[1]]}
    update, lone_hate, second = speed.updates_for(
        [("u", state, None), ("v", {"hated": [tracks[2]]}, None), ("w", other, None)]
    )
    assert update.model_version == model.version and update.hated == [tracks[2]]
    row = sp.csr_matrix(
        (np.array([LOVE_WEIGHT + PLAY_WEIGHT, PLAY_WEIGHT, HATE_WEIGHT], np.float32), [0, 1, 2], [0, 3]),
        shape=(1, len(model.item_ids)),
    )
    params = model.manifest.params
    expected = FoldIn(
        model.item_factors, regularization=params["regularization"], alpha=params["alpha"]
    ).vectors(model.confidence.transform(row))[0]
    assert update.vector is not None
    np.testing.assert_allclose(update.vector, expected, rtol=1e-5, atol=1e-6)
    assert lone_hate.vector is None and lone_hate.hated == [tracks[2]]  # only dislikes: nothing to fold in
    alone = speed.updates_for([("w", other, None)])[0]  # one solve for many gives each its own answer
    assert second.user_id == "w" and second.vector is not None and alone.vector is not None
    np.testing.assert_allclose(second.vector, alone.vector, rtol=1e-5, atol=1e-6)
